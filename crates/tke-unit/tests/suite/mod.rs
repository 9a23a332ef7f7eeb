//! The behaviour suite every backend and state store runs. Each body takes a
//! [`UnitFactory`]; the `backend_suite!` macro turns the list into one `#[test]` per body
//! for a backend.

use std::path::PathBuf;

use tempfile::TempDir;
use tke_proto::{
    command::ThresholdsInput,
    der::{asn1::OctetString, Decode, Encode},
    transport::{CertifiedImporter, ExportRequest, SignedEnvelope},
    AdminCommand, Command, CommandId, ModuleError, Nonce, Query, Register, RegisterState,
    RegisterStatus, Request, ResponseBody, SignedCommand, SignerInfo, Threshold, UnitId,
    UnitStatus, UnitType, Vp,
};
use tke_sigkey::Signer as _;
use tke_unit::{InternalError, MemoryStore, StateStore, Unit};

use crate::support::*;

mod parts;
pub mod service;
pub use parts::{control_points, import_mk_parts, import_mk_parts_refusals};
pub use service::{service_keys_through_a_rotation, service_refusals};

/// Expands to one `#[test]` per shared body, for the factory given.
macro_rules! backend_suite {
    ($factory:expr) => {
        backend_suite!(@each $factory;
            happy_path,
            query_changes_nothing,
            query_for_another_unit,
            signed_by_non_administrator,
            too_few_signatures,
            same_administrator_twice_counts_once,
            replayed_command,
            command_for_another_unit,
            byte_changed_after_signing,
            malformed_signature,
            malformed_requests,
            thresholds_out_of_range,
            unexpected_input,
            ninth_administrator,
            duplicate_administrator,
            lookalike_administrator_name,
            leaving_imprint_mode_needs_new_threshold,
            thresholds_above_admin_count,
            remove_administrator_rules,
            export_from_operational_unit,
            random_on_operational_unit,
            master_key_commands_in_imprint_mode,
            commit_with_wrong_vp,
            set_immediate_needs_committed,
            random_fills_current_then_new,
            import_wrapped_to_another_unit,
            import_tampered_envelope,
            import_without_pending_importer,
            import_same_value_as_current,
            import_into_full_new_register,
            import_malformed_envelope_from_fleet_member,
            import_wrong_length_key_from_fleet_member,
            export_checks_target,
            import_only_from_a_recovery_unit_of_the_instance,
            export_only_to_the_instance,
            cross_instance_transport,
            cross_instance_needs_the_same_fleet_ca,
            device_signatures_bound_to_their_kind,
            older_device_signatures_refused,
            export_batch,
            import_mk_parts,
            import_mk_parts_refusals,
            control_points,
            clear_registers,
            recovery_destruction_needs_quorum,
            zeroize_keeps_counter,
            state_survives_reopen,
            fuzzed_requests_never_panic,
            service_keys_through_a_rotation,
            service_refusals,
        );
    };
    (@each $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                suite::$name(&$factory);
            }
        )*
    };
}
pub(crate) use backend_suite;

/// A temp directory (where file-backed factories put the units; memory factories only
/// use the names), a fleet CA and administrators.
pub struct World {
    pub dir: TempDir,
    pub fleet: Fleet,
    pub admins: Vec<MemSigner>,
}

impl World {
    pub fn new(admins: usize) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            fleet: Fleet::new("test fleet"),
            admins: support_admins(admins),
        }
    }

    pub fn unit(&self, f: &dyn UnitFactory, name: &str, ty: UnitType) -> Unit {
        f.create(&self.path(name), UnitId::random(), ty, &self.fleet)
    }

    /// Where the unit `name` is made: what the factory reopens it from.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A unit with all administrators installed and thresholds 2/2.
    pub fn ready(&self, f: &dyn UnitFactory, name: &str, ty: UnitType) -> Unit {
        let mut u = self.unit(f, name, ty);
        init(&mut u, &self.fleet.ca, &self.admins, 2, 2);
        u
    }

    pub fn a(&self, i: usize) -> &MemSigner {
        &self.admins[i]
    }
}

fn support_admins(n: usize) -> Vec<MemSigner> {
    admins(n)
}

fn vp_of(out: &[u8]) -> Vp {
    Vp::from_slice(out).unwrap()
}

/// The status `before` with the counter consumed or not.
#[track_caller]
fn assert_unchanged(unit: &Unit, before: &UnitStatus, consumed: bool) {
    let mut expected = before.clone();
    if consumed {
        expected.counter += 1;
    }
    assert_eq!(unit.status(), expected);
}

fn valid(vp: Vp) -> RegisterStatus {
    RegisterStatus {
        state: RegisterState::Valid,
        vp: Some(vp),
    }
}

fn full(state: RegisterState, vp: Vp) -> RegisterStatus {
    RegisterStatus {
        state,
        vp: Some(vp),
    }
}

/// The target makes an importer key (signed by the first administrator).
fn certified_importer(w: &World, target: &mut Unit) -> CertifiedImporter {
    let out = ok(run(
        target,
        &w.fleet.ca,
        &Command::GenerateImporter,
        &[w.a(0)],
    ));
    CertifiedImporter::from_der(&out).unwrap()
}

/// The target makes an importer; returns the export request for `register` to it.
fn export_request(w: &World, target: &mut Unit, register: Register) -> ExportRequest {
    let importer = certified_importer(w, target);
    importer.verify(target.device_certificate()).unwrap();
    ExportRequest {
        register,
        target_certificate: OctetString::new(target.device_certificate().der().to_vec()).unwrap(),
        importer,
        target_instance: None,
    }
}

/// Exports `register` of `source` to a fresh importer of `target`.
fn export_to(
    w: &World,
    source: &mut Unit,
    target: &mut Unit,
    register: Register,
) -> SignedEnvelope {
    let req = export_request(w, target, register);
    let out = ok(run(
        source,
        &w.fleet.ca,
        &Command::ExportMk(Box::new(req)),
        &[w.a(0), w.a(1)],
    ));
    SignedEnvelope::from_der(&out).unwrap()
}

/// Moves the current master key of `source` into `target`'s current register.
fn load(w: &World, source: &mut Unit, target: &mut Unit) -> Vp {
    let ca = &w.fleet.ca;
    let env = export_to(w, source, target, Register::Current);
    let vp = vp_of(&ok(run(
        target,
        ca,
        &Command::ImportMk(Box::new(env)),
        &[w.a(2)],
    )));
    ok(run(target, ca, &Command::CommitMk(vp), &[w.a(0), w.a(1)]));
    ok(run(target, ca, &Command::SetImmediate(vp), &[w.a(1)]));
    vp
}

pub fn happy_path(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let (a1, a2, a3) = (w.a(0), w.a(1), w.a(2));
    let mut rec = w.unit(f, "recovery", UnitType::Recovery);
    let mut op = w.unit(f, "operational", UnitType::Operational);
    for u in [&mut rec, &mut op] {
        assert!(query(u, ca).imprint_mode());
        for a in &w.admins {
            ok(run(u, ca, &Command::AddAdmin(a.certificate().clone()), &[]));
        }
        let two = Threshold::new(2).unwrap();
        ok(run(
            u,
            ca,
            &Command::SetThresholds {
                signature: two,
                revocation: two,
            },
            &[a1, a2],
        ));
        let s = query(u, ca);
        assert_eq!(
            (s.sig_threshold, s.rev_threshold, s.admins.len(), s.counter),
            (2, 2, 3, 4)
        );
    }

    let vp = vp_of(&ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[a1])));
    let s = query(&mut rec, ca);
    assert_eq!(s.current_register, valid(vp));
    assert_eq!(s.new_register, RegisterStatus::EMPTY);

    let out = ok(run(&mut op, ca, &Command::GenerateImporter, &[a1]));
    let importer = CertifiedImporter::from_der(&out).unwrap();
    let key = importer.verify(op.device_certificate()).unwrap();
    assert_eq!(key.unit_id, op.id());
    assert!(query(&mut op, ca).importer_pending);

    let req = ExportRequest {
        register: Register::Current,
        target_certificate: OctetString::new(op.device_certificate().der().to_vec()).unwrap(),
        importer,
        target_instance: None,
    };
    let out = ok(run(
        &mut rec,
        ca,
        &Command::ExportMk(Box::new(req)),
        &[a1, a2],
    ));
    let env = SignedEnvelope::from_der(&out).unwrap();
    let (inner, source) = env.verify(ca).unwrap();
    assert_eq!(source.unit_id(), rec.id());
    assert_eq!((inner.target_unit_id, inner.vp), (op.id(), vp));

    assert_eq!(
        vp_of(&ok(run(
            &mut op,
            ca,
            &Command::ImportMk(Box::new(env)),
            &[a3]
        ))),
        vp
    );
    let s = query(&mut op, ca);
    assert_eq!(s.new_register, full(RegisterState::FullUncommitted, vp));
    assert!(!s.importer_pending, "the importer key is single-use");

    ok(run(&mut op, ca, &Command::CommitMk(vp), &[a1, a2]));
    assert_eq!(
        query(&mut op, ca).new_register,
        full(RegisterState::FullCommitted, vp)
    );
    ok(run(&mut op, ca, &Command::SetImmediate(vp), &[a2]));

    for u in [&mut rec, &mut op] {
        let s = query(u, ca);
        assert_eq!(s.current_register, valid(vp));
        assert_eq!(s.new_register, RegisterStatus::EMPTY);
    }
}

pub fn query_changes_nothing(f: &dyn UnitFactory) {
    let w = World::new(3);
    let mut u = w.ready(f, "u", UnitType::Recovery);
    let before = u.status();
    for _ in 0..3 {
        assert_eq!(query(&mut u, &w.fleet.ca), before);
    }
    assert_eq!(f.reopen(&w.path("u")).status(), before);
}

pub fn query_for_another_unit(f: &dyn UnitFactory) {
    let w = World::new(1);
    let mut u = w.unit(f, "u", UnitType::Operational);
    let q = Request::Query(Query {
        unit_id: UnitId::random(),
        nonce: Nonce::random(),
    });
    fails(&send(&mut u, &w.fleet.ca, &q), ModuleError::INVALID_UNIT);
}

pub fn signed_by_non_administrator(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mallory = MemSigner::new("mallory");
    let newcomer = MemSigner::new("newcomer");
    // In imprint mode too, every signature present must come from an installed admin.
    let mut u = w.unit(f, "imprint", UnitType::Recovery);
    let before = u.status();
    fails(
        &run(
            &mut u,
            ca,
            &Command::AddAdmin(newcomer.certificate().clone()),
            &[&mallory],
        ),
        ModuleError::UNAUTHORIZED_SIGNER,
    );
    assert_unchanged(&u, &before, false);

    let mut u = w.ready(f, "u", UnitType::Recovery);
    let before = u.status();
    let body = run(
        &mut u,
        ca,
        &Command::AddAdmin(newcomer.certificate().clone()),
        &[w.a(0), &mallory],
    );
    fails(&body, ModuleError::UNAUTHORIZED_SIGNER);
    assert_unchanged(&u, &before, false);
}

pub fn too_few_signatures(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut u = w.ready(f, "u", UnitType::Recovery);
    let before = u.status();
    let newcomer = MemSigner::new("newcomer");
    fails(
        &run(
            &mut u,
            ca,
            &Command::AddAdmin(newcomer.certificate().clone()),
            &[w.a(0)],
        ),
        ModuleError::NOT_ENOUGH_SIGNATURES,
    );
    fails(
        &run(&mut u, ca, &Command::GenerateRandomMk, &[]),
        ModuleError::NOT_ENOUGH_SIGNATURES,
    );
    fails(
        &run(
            &mut u,
            ca,
            &Command::RemoveAdmin(w.a(2).certificate().ski()),
            &[w.a(1)],
        ),
        ModuleError::NOT_ENOUGH_SIGNATURES,
    );
    assert_unchanged(&u, &before, false);
}

pub fn same_administrator_twice_counts_once(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut u = w.ready(f, "u", UnitType::Recovery);
    let before = u.status();
    let newcomer = MemSigner::new("newcomer");
    let mut signed = signed_command(
        u.id(),
        before.counter + 1,
        &Command::AddAdmin(newcomer.certificate().clone()),
        &[w.a(0)],
    );
    let dup: SignerInfo = signed.signer_infos[0].clone();
    signed.signer_infos.push(dup);
    fails(
        &send(&mut u, ca, &Request::Command(signed)),
        ModuleError::NOT_ENOUGH_SIGNATURES,
    );
    assert_unchanged(&u, &before, false);
}

pub fn replayed_command(f: &dyn UnitFactory) {
    let w = World::new(4);
    let ca = &w.fleet.ca;
    let mut u = w.unit(f, "u", UnitType::Recovery);
    init(&mut u, ca, &w.admins[..3], 2, 2);
    let cmd = signed_command(
        u.id(),
        u.status().counter + 1,
        &Command::AddAdmin(w.a(3).certificate().clone()),
        &[w.a(0), w.a(1)],
    );
    let req = Request::Command(cmd);
    ok(send(&mut u, ca, &req));
    let after = u.status();
    fails(&send(&mut u, ca, &req), ModuleError::INVALID_COUNTER);
    assert_unchanged(&u, &after, false);
    // A command for a later counter is refused too.
    let later = run_at(&mut u, ca, &Command::ClearNew, after.counter + 2, &[w.a(0)]);
    fails(&later, ModuleError::INVALID_COUNTER);
    let earlier = run_at(&mut u, ca, &Command::ClearNew, after.counter, &[w.a(0)]);
    fails(&earlier, ModuleError::INVALID_COUNTER);
    assert_unchanged(&u, &after, false);
}

pub fn command_for_another_unit(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut u = w.ready(f, "u", UnitType::Recovery);
    let mut other = w.ready(f, "other", UnitType::Recovery);
    let before = u.status();
    assert_eq!(before.counter, other.status().counter);
    // Same counter, same signers, but addressed to the other unit.
    let cmd = signed_command(
        other.id(),
        before.counter + 1,
        &Command::GenerateRandomMk,
        &[w.a(0)],
    );
    fails(
        &send(&mut u, ca, &Request::Command(cmd.clone())),
        ModuleError::INVALID_UNIT,
    );
    assert_unchanged(&u, &before, false);
    ok(send(&mut other, ca, &Request::Command(cmd)));
}

pub fn byte_changed_after_signing(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut u = w.ready(f, "u", UnitType::Recovery);
    let before = u.status();
    let two = Threshold::new(2).unwrap();
    let mut signed = signed_command(
        u.id(),
        before.counter + 1,
        &Command::SetThresholds {
            signature: two,
            revocation: two,
        },
        &[w.a(0), w.a(1)],
    );
    // The last byte is the revocation threshold: 2 → 3, still a valid command.
    let mut bytes = signed.command.as_bytes().to_vec();
    let last = bytes.len() - 1;
    assert_eq!(bytes[last], 2);
    bytes[last] = 3;
    signed.command = OctetString::new(bytes).unwrap();
    fails(
        &send(&mut u, ca, &Request::Command(signed)),
        ModuleError::INVALID_SIGNATURE,
    );
    assert_unchanged(&u, &before, false);
}

pub fn malformed_signature(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut u = w.ready(f, "u", UnitType::Recovery);
    let before = u.status();
    let mut signed = signed_command(
        u.id(),
        before.counter + 1,
        &Command::GenerateRandomMk,
        &[w.a(0)],
    );
    signed.signer_infos[0].signature = OctetString::new(b"not a signature".to_vec()).unwrap();
    fails(
        &send(&mut u, ca, &Request::Command(signed)),
        ModuleError::MALFORMED_SIGNATURE,
    );
    assert_unchanged(&u, &before, false);
}

pub fn malformed_requests(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut u = w.ready(f, "u", UnitType::Recovery);
    let before = u.status();
    let valid = Request::Command(signed_command(
        u.id(),
        before.counter + 1,
        &Command::GenerateRandomMk,
        &[w.a(0)],
    ))
    .to_der()
    .unwrap();
    let mut trailing = valid.clone();
    trailing.push(0);
    let mut bad_inner = Request::Command(SignedCommand {
        command: OctetString::new(b"\x30\x00".to_vec()).unwrap(),
        signer_infos: Vec::new(),
    })
    .to_der()
    .unwrap();
    let inputs: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0],
        vec![0xff; 64],
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        valid[..valid.len() / 2].to_vec(),
        valid[..valid.len() - 1].to_vec(),
        trailing,
        std::mem::take(&mut bad_inner),
    ];
    for input in &inputs {
        fails(&send_raw(&mut u, ca, input), ModuleError::INVALID_DATA);
        assert_unchanged(&u, &before, false);
    }
    // The intact request still works.
    ok(send_raw(&mut u, ca, &valid));
}

/// A `ThresholdsInput` with integers of any size: values above 255 do not fit the typed
/// `u8` fields, yet must be refused like 9 (209/57, 209/58), not as undecodable (32). Its
/// encoding of values up to 255 is `ThresholdsInput`'s.
#[derive(der::Sequence)]
struct WideThresholds {
    signature: u64,
    revocation: u64,
}

/// An unsigned `setThresholds` with `input` as its input bytes.
fn thresholds_request(unit: &Unit, input: Vec<u8>) -> Request {
    let wire = AdminCommand {
        unit_id: unit.id(),
        counter: unit.status().counter + 1,
        command: CommandId::SetThresholds,
        input: OctetString::new(input).unwrap(),
    };
    Request::Command(SignedCommand::unsigned(&wire).unwrap())
}

pub fn thresholds_out_of_range(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut u = w.unit(f, "u", UnitType::Recovery);
    for a in &w.admins {
        ok(run(
            &mut u,
            ca,
            &Command::AddAdmin(a.certificate().clone()),
            &[],
        ));
    }
    let wide = |signature, revocation| {
        WideThresholds {
            signature,
            revocation,
        }
        .to_der()
        .unwrap()
    };
    let typed = ThresholdsInput {
        signature: 255,
        revocation: 3,
    };
    assert_eq!(wide(255, 3), typed.to_der().unwrap());
    let before = u.status();
    let sig_zero = ModuleError::new(209, 76);
    let rev_zero = ModuleError::new(209, 77);
    let sig_above = ModuleError::SIG_THRESHOLD_ABOVE_ADMINS;
    let rev_above = ModuleError::REV_THRESHOLD_ABOVE_ADMINS;
    for (sig, rev, expected) in [
        (0, 2, sig_zero),
        (2, 0, rev_zero),
        (0, 0, sig_zero),
        (9, 2, sig_above),
        (2, 9, rev_above),
        (255, 255, sig_above),
        // Whatever the size.
        (255, 2, sig_above),
        (256, 2, sig_above),
        (65536, 2, sig_above),
        (u64::MAX, 2, sig_above),
        (2, 255, rev_above),
        (2, 256, rev_above),
        (2, 65536, rev_above),
        (2, u64::MAX, rev_above),
        (65536, 65536, sig_above),
        (0, 65536, sig_zero),
        (65536, 0, rev_zero),
    ] {
        let req = thresholds_request(&u, wide(sig, rev));
        let body = send(&mut u, ca, &req);
        assert_eq!(body.error(), Some(expected), "thresholds {sig}/{rev}");
        assert_unchanged(&u, &before, false);
    }
    // A negative threshold is not a count at all: invalid data.
    for input in [
        [0x30, 0x06, 0x02, 0x01, 0xff, 0x02, 0x01, 0x02],
        [0x30, 0x06, 0x02, 0x01, 0x02, 0x02, 0x01, 0x80],
    ] {
        let req = thresholds_request(&u, input.to_vec());
        fails(&send(&mut u, ca, &req), ModuleError::INVALID_DATA);
        assert_unchanged(&u, &before, false);
    }
}

pub fn unexpected_input(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut u = w.ready(f, "u", UnitType::Recovery);
    let before = u.status();
    let body = run_raw(
        &mut u,
        ca,
        CommandId::GenerateRandomMk,
        b"x".to_vec(),
        &[w.a(0)],
    );
    fails(&body, ModuleError::UNEXPECTED_ARGUMENTS);
    // A commit whose VP is not 32 bytes.
    let body = run_raw(
        &mut u,
        ca,
        CommandId::CommitMk,
        vec![1; 31],
        &[w.a(0), w.a(1)],
    );
    fails(&body, ModuleError::INVALID_DATA);
    assert_unchanged(&u, &before, false);
}

pub fn ninth_administrator(f: &dyn UnitFactory) {
    let w = World::new(9);
    let ca = &w.fleet.ca;
    let mut u = w.unit(f, "u", UnitType::Recovery);
    for a in &w.admins[..8] {
        ok(run(
            &mut u,
            ca,
            &Command::AddAdmin(a.certificate().clone()),
            &[],
        ));
    }
    let before = u.status();
    assert_eq!(before.admins.len(), 8);
    fails(
        &run(
            &mut u,
            ca,
            &Command::AddAdmin(w.a(8).certificate().clone()),
            &[],
        ),
        ModuleError::TOO_MANY_ADMINS,
    );
    assert_unchanged(&u, &before, true);
}

pub fn duplicate_administrator(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut u = w.unit(f, "u", UnitType::Recovery);
    ok(run(
        &mut u,
        ca,
        &Command::AddAdmin(w.a(0).certificate().clone()),
        &[],
    ));
    let before = u.status();
    fails(
        &run(
            &mut u,
            ca,
            &Command::AddAdmin(w.a(0).certificate().clone()),
            &[],
        ),
        ModuleError::ADMIN_EXISTS,
    );
    assert_unchanged(&u, &before, true);
    // Out of imprint mode as well.
    let mut u = w.ready(f, "ready", UnitType::Recovery);
    let before = u.status();
    fails(
        &run(
            &mut u,
            ca,
            &Command::AddAdmin(w.a(2).certificate().clone()),
            &[w.a(0), w.a(1)],
        ),
        ModuleError::ADMIN_EXISTS,
    );
    assert_unchanged(&u, &before, true);
}

/// An administrator whose name looks like an installed one's (another key) is refused
/// with 256/40, in imprint mode and out of it; a name that merely resembles one is not.
pub fn lookalike_administrator_name(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    // A new administrator named `name`, with a key of its own.
    let add = |u: &mut Unit, name: &str, signers: &[&MemSigner]| {
        let cert = MemSigner::new(name).certificate().clone();
        run(u, ca, &Command::AddAdmin(cert), signers)
    };
    let installed = w.a(0).certificate().name().as_str().to_owned();
    // Upper case, and the Latin a replaced by a Cyrillic one.
    let lookalikes = [installed.to_uppercase(), installed.replace('a', "\u{430}")];
    assert!(lookalikes.iter().all(|n| *n != installed), "{lookalikes:?}");
    let mut u = w.unit(f, "u", UnitType::Recovery);
    let first = Command::AddAdmin(w.a(0).certificate().clone());
    ok(run(&mut u, ca, &first, &[]));
    // The same name with another key looks the same too.
    for name in lookalikes.iter().chain([&installed]) {
        let before = u.status();
        fails(&add(&mut u, name, &[]), ModuleError::ADMIN_NAME_LOOKALIKE);
        assert_unchanged(&u, &before, true);
    }
    // A different name is installed.
    ok(add(&mut u, &format!("{installed}-2"), &[]));
    // Out of imprint mode, with a quorum's signatures, still refused.
    let mut u = w.ready(f, "ready", UnitType::Recovery);
    let before = u.status();
    fails(
        &add(&mut u, &lookalikes[0], &[w.a(0), w.a(1)]),
        ModuleError::ADMIN_NAME_LOOKALIKE,
    );
    assert_unchanged(&u, &before, true);
}

pub fn leaving_imprint_mode_needs_new_threshold(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut u = w.unit(f, "u", UnitType::Recovery);
    for a in &w.admins {
        ok(run(
            &mut u,
            ca,
            &Command::AddAdmin(a.certificate().clone()),
            &[],
        ));
    }
    let before = u.status();
    let cmd = Command::SetThresholds {
        signature: Threshold::new(3).unwrap(),
        revocation: Threshold::new(1).unwrap(),
    };
    fails(
        &run(&mut u, ca, &cmd, &[w.a(0), w.a(1)]),
        ModuleError::NOT_ENOUGH_SIGNATURES,
    );
    fails(
        &run(&mut u, ca, &cmd, &[]),
        ModuleError::NOT_ENOUGH_SIGNATURES,
    );
    assert_unchanged(&u, &before, false);
    assert!(u.status().imprint_mode());
    ok(run(&mut u, ca, &cmd, &[w.a(0), w.a(1), w.a(2)]));
    assert_eq!((u.status().sig_threshold, u.status().rev_threshold), (3, 1));
}

pub fn thresholds_above_admin_count(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let t = |n| Threshold::new(n).unwrap();
    // Leaving imprint mode: revocation 3 with 2 admins.
    let mut u = w.unit(f, "imprint", UnitType::Recovery);
    for a in &w.admins[..2] {
        ok(run(
            &mut u,
            ca,
            &Command::AddAdmin(a.certificate().clone()),
            &[],
        ));
    }
    let before = u.status();
    let cmd = Command::SetThresholds {
        signature: t(2),
        revocation: t(3),
    };
    fails(
        &run(&mut u, ca, &cmd, &[w.a(0), w.a(1)]),
        ModuleError::REV_THRESHOLD_ABOVE_ADMINS,
    );
    assert_unchanged(&u, &before, true);
    // Out of imprint mode: signature 4 with 3 admins.
    let mut u = w.ready(f, "ready", UnitType::Recovery);
    let before = u.status();
    let cmd = Command::SetThresholds {
        signature: t(4),
        revocation: t(2),
    };
    fails(
        &run(&mut u, ca, &cmd, &[w.a(0), w.a(1)]),
        ModuleError::SIG_THRESHOLD_ABOVE_ADMINS,
    );
    assert_unchanged(&u, &before, true);
    // Out of imprint mode the current threshold signs a change.
    let cmd = Command::SetThresholds {
        signature: t(3),
        revocation: t(1),
    };
    fails(
        &run(&mut u, ca, &cmd, &[w.a(0)]),
        ModuleError::NOT_ENOUGH_SIGNATURES,
    );
    ok(run(&mut u, ca, &cmd, &[w.a(0), w.a(1)]));
}

pub fn remove_administrator_rules(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    // Imprint mode: unsigned.
    let mut u = w.unit(f, "imprint", UnitType::Operational);
    ok(run(
        &mut u,
        ca,
        &Command::AddAdmin(w.a(0).certificate().clone()),
        &[],
    ));
    ok(run(
        &mut u,
        ca,
        &Command::RemoveAdmin(w.a(0).certificate().ski()),
        &[],
    ));
    assert!(u.status().admins.is_empty());

    let mut u = w.ready(f, "ready", UnitType::Operational);
    let before = u.status();
    let stranger = MemSigner::new("stranger").certificate().ski();
    fails(
        &run(
            &mut u,
            ca,
            &Command::RemoveAdmin(stranger),
            &[w.a(0), w.a(1)],
        ),
        ModuleError::ADMIN_NOT_FOUND,
    );
    assert_unchanged(&u, &before, true);
    ok(run(
        &mut u,
        ca,
        &Command::RemoveAdmin(w.a(2).certificate().ski()),
        &[w.a(0), w.a(1)],
    ));
    assert_eq!(u.status().admins.len(), 2);
    let before = u.status();
    fails(
        &run(
            &mut u,
            ca,
            &Command::RemoveAdmin(w.a(1).certificate().ski()),
            &[w.a(0), w.a(1)],
        ),
        ModuleError::REMOVAL_BELOW_THRESHOLD,
    );
    assert_unchanged(&u, &before, true);
}

pub fn export_from_operational_unit(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut rec = w.ready(f, "rec", UnitType::Recovery);
    let mut op = w.ready(f, "op", UnitType::Operational);
    let mut other = w.ready(f, "other", UnitType::Operational);
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    load(&w, &mut rec, &mut op);
    for ty in [UnitType::Operational, UnitType::Failover] {
        let mut src = if ty == UnitType::Operational {
            None
        } else {
            let mut fo = w.ready(f, "failover", UnitType::Failover);
            load(&w, &mut rec, &mut fo);
            Some(fo)
        };
        let src = src.as_mut().unwrap_or(&mut op);
        let req = export_request(&w, &mut other, Register::Current);
        let before = src.status();
        fails(
            &run(
                src,
                ca,
                &Command::ExportMk(Box::new(req)),
                &[w.a(0), w.a(1)],
            ),
            ModuleError::EXPORT_FORBIDDEN,
        );
        assert_unchanged(src, &before, true);
    }
}

pub fn random_on_operational_unit(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    for ty in [UnitType::Operational, UnitType::Failover] {
        let mut u = w.ready(f, ty.json_name(), ty);
        let before = u.status();
        fails(
            &run(&mut u, ca, &Command::GenerateRandomMk, &[w.a(0)]),
            ModuleError::RANDOM_FORBIDDEN,
        );
        assert_unchanged(&u, &before, true);
    }
}

pub fn master_key_commands_in_imprint_mode(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut u = w.unit(f, "u", UnitType::Recovery);
    let mut target = w.ready(f, "target", UnitType::Operational);
    for a in &w.admins {
        ok(run(
            &mut u,
            ca,
            &Command::AddAdmin(a.certificate().clone()),
            &[],
        ));
    }
    let req = export_request(&w, &mut target, Register::Current);
    let dummy_env = SignedEnvelope {
        envelope: OctetString::new(vec![1]).unwrap(),
        signature: OctetString::new(vec![2]).unwrap(),
        source_certificate: OctetString::new(vec![3]).unwrap(),
        source_instance: None,
    };
    let vp = Vp([7; 32]);
    let parts_req = tke_proto::parts::MkPartsRequest {
        importer_key_id: tke_proto::Digest32([1; 32]),
        parts: vec![
            tke_proto::parts::SealedPart {
                ephemeral_public_key: OctetString::new(vec![4]).unwrap(),
                wrapped_part: OctetString::new(vec![5]).unwrap(),
                vp,
            };
            2
        ],
    };
    let before = u.status();
    for cmd in [
        Command::ImportMkParts(Box::new(parts_req)),
        Command::AddControlPoints(tke_proto::ControlPoints::DEFAULT),
        Command::RemoveControlPoints(tke_proto::ControlPoints::DEFAULT),
        Command::GenerateImporter,
        Command::GenerateRandomMk,
        Command::ExportMk(Box::new(req)),
        Command::ImportMk(Box::new(dummy_env)),
        Command::CommitMk(vp),
        Command::SetImmediate(vp),
        Command::ClearNew,
        Command::ClearCurrent,
    ] {
        for signers in [&[][..], &[w.a(0), w.a(1), w.a(2)][..]] {
            fails(&run(&mut u, ca, &cmd, signers), ModuleError::IMPRINT_MODE);
            assert_unchanged(&u, &before, false);
        }
    }
}

pub fn commit_with_wrong_vp(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut rec = w.ready(f, "rec", UnitType::Recovery);
    let mut op = w.ready(f, "op", UnitType::Operational);
    let vp = vp_of(&ok(run(
        &mut rec,
        ca,
        &Command::GenerateRandomMk,
        &[w.a(0)],
    )));
    let env = export_to(&w, &mut rec, &mut op, Register::Current);
    ok(run(
        &mut op,
        ca,
        &Command::ImportMk(Box::new(env)),
        &[w.a(0)],
    ));
    let before = op.status();
    fails(
        &run(
            &mut op,
            ca,
            &Command::CommitMk(Vp([0; 32])),
            &[w.a(0), w.a(1)],
        ),
        ModuleError::VP_MISMATCH,
    );
    assert_unchanged(&op, &before, true);
    assert_eq!(
        op.status().new_register,
        full(RegisterState::FullUncommitted, vp)
    );
    ok(run(&mut op, ca, &Command::CommitMk(vp), &[w.a(0), w.a(1)]));
    let before = op.status();
    fails(
        &run(&mut op, ca, &Command::SetImmediate(Vp([0; 32])), &[w.a(0)]),
        ModuleError::VP_MISMATCH,
    );
    assert_unchanged(&op, &before, true);
    // Committing twice is a register-state error.
    fails(
        &run(&mut op, ca, &Command::CommitMk(vp), &[w.a(0), w.a(1)]),
        ModuleError::REGISTER_STATE,
    );
}

pub fn set_immediate_needs_committed(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut rec = w.ready(f, "rec", UnitType::Recovery);
    let before = rec.status();
    fails(
        &run(&mut rec, ca, &Command::SetImmediate(Vp([1; 32])), &[w.a(0)]),
        ModuleError::REGISTER_STATE,
    );
    fails(
        &run(
            &mut rec,
            ca,
            &Command::CommitMk(Vp([1; 32])),
            &[w.a(0), w.a(1)],
        ),
        ModuleError::REGISTER_STATE,
    );
    let mut expected = before.clone();
    expected.counter += 2;
    assert_eq!(rec.status(), expected);
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    let vp2 = vp_of(&ok(run(
        &mut rec,
        ca,
        &Command::GenerateRandomMk,
        &[w.a(0)],
    )));
    let before = rec.status();
    fails(
        &run(&mut rec, ca, &Command::SetImmediate(vp2), &[w.a(0)]),
        ModuleError::REGISTER_STATE,
    );
    assert_unchanged(&rec, &before, true);
}

pub fn random_fills_current_then_new(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut rec = w.ready(f, "rec", UnitType::Recovery);
    let vp1 = vp_of(&ok(run(
        &mut rec,
        ca,
        &Command::GenerateRandomMk,
        &[w.a(0)],
    )));
    let vp2 = vp_of(&ok(run(
        &mut rec,
        ca,
        &Command::GenerateRandomMk,
        &[w.a(0)],
    )));
    assert_ne!(vp1, vp2);
    let s = rec.status();
    assert_eq!(s.current_register, valid(vp1));
    assert_eq!(s.new_register, full(RegisterState::FullUncommitted, vp2));
    fails(
        &run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]),
        ModuleError::REGISTER_STATE,
    );
    assert_unchanged(&rec, &s, true);
    // Rotation inside the recovery unit: commit, set immediate.
    ok(run(
        &mut rec,
        ca,
        &Command::CommitMk(vp2),
        &[w.a(0), w.a(1)],
    ));
    ok(run(&mut rec, ca, &Command::SetImmediate(vp2), &[w.a(1)]));
    let s = rec.status();
    assert_eq!(
        (s.current_register, s.new_register),
        (valid(vp2), RegisterStatus::EMPTY)
    );
    // The promoted key is really there: it can be exported.
    let mut op = w.ready(f, "op", UnitType::Operational);
    assert_eq!(load(&w, &mut rec, &mut op), vp2);
}

pub fn import_wrapped_to_another_unit(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut rec = w.ready(f, "rec", UnitType::Recovery);
    let mut op1 = w.ready(f, "op1", UnitType::Operational);
    let mut op2 = w.ready(f, "op2", UnitType::Operational);
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    ok(run(&mut op1, ca, &Command::GenerateImporter, &[w.a(0)]));
    let env = export_to(&w, &mut rec, &mut op2, Register::Current);
    let before = op1.status();
    assert!(before.importer_pending);
    fails(
        &run(
            &mut op1,
            ca,
            &Command::ImportMk(Box::new(env.clone())),
            &[w.a(0)],
        ),
        ModuleError::INVALID_UNIT,
    );
    assert_unchanged(&op1, &before, true);
    // The envelope still works where it was meant to go.
    ok(run(
        &mut op2,
        ca,
        &Command::ImportMk(Box::new(env)),
        &[w.a(0)],
    ));
    // A unit of another fleet refuses it: its source does not chain to that CA.
    let w2 = World::new(3);
    let mut foreign = w2.ready(f, "foreign", UnitType::Operational);
    let env = export_to(&w, &mut rec, &mut op1, Register::Current);
    let before = foreign.status();
    fails(
        &run(
            &mut foreign,
            &w2.fleet.ca,
            &Command::ImportMk(Box::new(env)),
            &[w2.a(0)],
        ),
        ModuleError::INVALID_IMPORTER,
    );
    assert_unchanged(&foreign, &before, true);
}

pub fn import_tampered_envelope(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut rec = w.ready(f, "rec", UnitType::Recovery);
    let mut op = w.ready(f, "op", UnitType::Operational);
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    let env = export_to(&w, &mut rec, &mut op, Register::Current);
    let before = op.status();
    // One byte of the wrapped key, or of the signature, or another certificate.
    let mut tampered = Vec::new();
    let mut e = env.clone();
    let mut b = e.envelope.as_bytes().to_vec();
    let n = b.len();
    b[n - 40] ^= 1;
    e.envelope = OctetString::new(b).unwrap();
    tampered.push(e);
    let mut e = env.clone();
    let mut b = e.signature.as_bytes().to_vec();
    let n = b.len();
    b[n - 1] ^= 1;
    e.signature = OctetString::new(b).unwrap();
    tampered.push(e);
    let mut e = env.clone();
    e.source_certificate = OctetString::new(op.device_certificate().der().to_vec()).unwrap();
    tampered.push(e);
    for (i, e) in tampered.into_iter().enumerate() {
        fails(
            &run(&mut op, ca, &Command::ImportMk(Box::new(e)), &[w.a(0)]),
            ModuleError::INVALID_IMPORTER,
        );
        let mut expected = before.clone();
        expected.counter += i as u64 + 1;
        assert_eq!(op.status(), expected, "the importer key stays pending");
    }
    ok(run(
        &mut op,
        ca,
        &Command::ImportMk(Box::new(env)),
        &[w.a(0)],
    ));
}

pub fn import_without_pending_importer(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut rec = w.ready(f, "rec", UnitType::Recovery);
    let mut op = w.ready(f, "op", UnitType::Operational);
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    // Wrapped to an importer that a newer one replaced.
    let old = export_to(&w, &mut rec, &mut op, Register::Current);
    ok(run(&mut op, ca, &Command::GenerateImporter, &[w.a(0)]));
    let before = op.status();
    fails(
        &run(&mut op, ca, &Command::ImportMk(Box::new(old)), &[w.a(0)]),
        ModuleError::NOT_FOUND,
    );
    assert_unchanged(&op, &before, true);
    // Single use: the same envelope twice.
    let env = export_to(&w, &mut rec, &mut op, Register::Current);
    let vp = vp_of(&ok(run(
        &mut op,
        ca,
        &Command::ImportMk(Box::new(env.clone())),
        &[w.a(0)],
    )));
    ok(run(&mut op, ca, &Command::ClearNew, &[w.a(0)]));
    let before = op.status();
    assert!(!before.importer_pending);
    fails(
        &run(&mut op, ca, &Command::ImportMk(Box::new(env)), &[w.a(0)]),
        ModuleError::NOT_FOUND,
    );
    assert_unchanged(&op, &before, true);
    assert_eq!(before.new_register, RegisterStatus::EMPTY, "{vp}");
}

pub fn import_same_value_as_current(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut rec = w.ready(f, "rec", UnitType::Recovery);
    let mut op = w.ready(f, "op", UnitType::Operational);
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    load(&w, &mut rec, &mut op);
    let env = export_to(&w, &mut rec, &mut op, Register::Current);
    let mut before = op.status();
    fails(
        &run(&mut op, ca, &Command::ImportMk(Box::new(env)), &[w.a(0)]),
        ModuleError::SAME_VALUE,
    );
    before.importer_pending = false;
    assert_unchanged(&op, &before, true);
}

pub fn import_into_full_new_register(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut rec = w.ready(f, "rec", UnitType::Recovery);
    let mut op = w.ready(f, "op", UnitType::Operational);
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    let env = export_to(&w, &mut rec, &mut op, Register::Current);
    ok(run(
        &mut op,
        ca,
        &Command::ImportMk(Box::new(env)),
        &[w.a(0)],
    ));
    // The target and importer key checks come before the register check (protocol.md
    // §11): an envelope for a replaced importer key, or for another unit, gets 96 or 3
    // and leaves the pending importer key alone.
    let stale = export_to(&w, &mut rec, &mut op, Register::New);
    ok(run(&mut op, ca, &Command::GenerateImporter, &[w.a(0)]));
    let mut op2 = w.ready(f, "op2", UnitType::Operational);
    let elsewhere = export_to(&w, &mut rec, &mut op2, Register::New);
    for (env, expected) in [
        (stale, ModuleError::NOT_FOUND),
        (elsewhere, ModuleError::INVALID_UNIT),
    ] {
        let before = op.status();
        assert!(before.importer_pending);
        fails(
            &run(&mut op, ca, &Command::ImportMk(Box::new(env)), &[w.a(0)]),
            expected,
        );
        assert_unchanged(&op, &before, true);
    }
    // The new register of the recovery unit can be exported too.
    let env = export_to(&w, &mut rec, &mut op, Register::New);
    let mut before = op.status();
    fails(
        &run(&mut op, ca, &Command::ImportMk(Box::new(env)), &[w.a(0)]),
        ModuleError::REGISTER_STATE,
    );
    before.importer_pending = false;
    assert_unchanged(&op, &before, true);
}

/// A fleet member that signs whatever it likes (the test holds the CA key).
pub fn import_malformed_envelope_from_fleet_member(f: &dyn UnitFactory) {
    use tke_proto::p256::ecdsa::{signature::Signer as _, Signature, SigningKey};
    use tke_proto::transport::{point_bytes, MkEnvelope};
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut op = w.ready(f, "op", UnitType::Operational);
    let rogue_key = SigningKey::random(&mut rand_core::OsRng);
    let rogue_id = UnitId::random();
    let rogue_cert = w
        .fleet
        .issue(
            rogue_id,
            UnitType::Recovery,
            &rogue_key.verifying_key().into(),
        )
        .unwrap();
    let point = point_bytes(&rogue_key.verifying_key().into());
    for wrapped in [
        // The RFC 5649 prefix with no key: the shape a buggy unwrap panics on.
        vec![0xA6, 0x59, 0x59, 0xA6, 0, 0, 0, 0],
        Vec::new(),
        vec![0; 39],
        // Right size, but not wrapped under the importer's key.
        vec![0x5a; 40],
    ] {
        let out = ok(run(&mut op, ca, &Command::GenerateImporter, &[w.a(0)]));
        let importer = CertifiedImporter::from_der(&out)
            .unwrap()
            .verify(op.device_certificate())
            .unwrap();
        let envelope = MkEnvelope {
            source_unit_id: rogue_id,
            target_unit_id: op.id(),
            importer_key_id: importer.key_id,
            ephemeral_public_key: OctetString::new(point.to_vec()).unwrap(),
            wrapped_key: OctetString::new(wrapped).unwrap(),
            vp: Vp([1; 32]),
        };
        let signed = SignedEnvelope::sign(&envelope, &rogue_cert, |c, b| {
            let s: Signature = rogue_key.sign(&c.signed_bytes(b));
            Ok(s.to_der())
        })
        .unwrap();
        let mut before = op.status();
        fails(
            &run(&mut op, ca, &Command::ImportMk(Box::new(signed)), &[w.a(0)]),
            ModuleError::INVALID_DATA,
        );
        before.importer_pending = false;
        assert_unchanged(&op, &before, true);
    }
}

/// What a fleet member computes to seal a key from `source` to the importer `importer_key`
/// of `target` (`docs/protocol.md` §11, step 3): a fresh ephemeral point and the KEK.
fn member_kek(
    source: UnitId,
    target: UnitId,
    importer_key: &tke_proto::p256::PublicKey,
) -> ([u8; 65], tke_proto::transport::Kek) {
    use tke_proto::p256::ecdh::EphemeralSecret;
    use tke_proto::transport::{derive_kek, kdf_context, point_bytes};
    let eph = EphemeralSecret::random(&mut rand_core::OsRng);
    let eph_point = point_bytes(&eph.public_key());
    let mut z = [0u8; 32];
    z.copy_from_slice(eph.diffie_hellman(importer_key).raw_secret_bytes());
    let ctx = kdf_context(&source, &target, &eph_point, &point_bytes(importer_key));
    (eph_point, derive_kek(&z, &ctx))
}

/// A source the test holds the keys of, which seals the key `0x42…` to `target`'s pending
/// importer `importer` as a fleet member would (`docs/protocol.md` §11, step 3), and
/// signs the envelope as the unit any CA certifies it to be.
struct Member {
    key: tke_proto::p256::ecdsa::SigningKey,
    id: UnitId,
    mk: tke_proto::MasterKey,
    envelope: tke_proto::transport::MkEnvelope,
}

impl Member {
    fn sealing_for(target: &Unit, importer: &tke_proto::transport::ImporterKey) -> Self {
        use tke_proto::transport::{wrap, MkEnvelope};
        let id = UnitId::random();
        let mk = tke_proto::MasterKey::from_slice(&[0x42; 32]).unwrap();
        let (eph_point, kek) = member_kek(id, target.id(), &importer.key().unwrap());
        let envelope = MkEnvelope {
            source_unit_id: id,
            target_unit_id: target.id(),
            importer_key_id: importer.key_id,
            ephemeral_public_key: OctetString::new(eph_point.to_vec()).unwrap(),
            wrapped_key: OctetString::new(wrap(kek.expose_secret(), &mk).unwrap()).unwrap(),
            vp: mk.vp(),
        };
        Self {
            key: tke_proto::p256::ecdsa::SigningKey::random(&mut rand_core::OsRng),
            id,
            mk,
            envelope,
        }
    }

    /// The envelope, signed as the unit `fleet`'s CA certifies as `description`.
    fn signed_as(&self, fleet: &Fleet, description: tke_proto::UnitDescription) -> SignedEnvelope {
        use tke_proto::p256::ecdsa::{signature::Signer as _, Signature};
        let cert = fleet
            .issue_described(self.id, &description, &self.key.verifying_key().into())
            .unwrap();
        SignedEnvelope::sign(&self.envelope, &cert, |c, b| {
            let s: Signature = self.key.sign(&c.signed_bytes(b));
            Ok(s.to_der())
        })
        .unwrap()
    }
}

/// Runs each of `commands` on `unit`, signed by `signers`: each is refused with
/// `expected`, and nothing changed but the counter, consumed once per command.
#[track_caller]
fn all_refused(
    unit: &mut Unit,
    ca: &tke_proto::CaCertificate,
    commands: impl IntoIterator<Item = Command>,
    signers: &[&MemSigner],
    expected: ModuleError,
) {
    let mut status = unit.status();
    for command in commands {
        fails(&run(unit, ca, &command, signers), expected);
        status.counter += 1;
        assert_eq!(unit.status(), status, "{command:?}");
    }
}

/// A fleet member that wraps, correctly, a value of another length than 32 bytes: a
/// 40-byte RFC 5649 envelope holds 25 to 32 bytes.
pub fn import_wrong_length_key_from_fleet_member(f: &dyn UnitFactory) {
    use tke_proto::p256::ecdsa::{signature::Signer as _, Signature, SigningKey};
    use tke_proto::transport::MkEnvelope;
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut op = w.ready(f, "op", UnitType::Operational);
    let rogue_key = SigningKey::random(&mut rand_core::OsRng);
    let rogue_id = UnitId::random();
    let rogue_cert = w
        .fleet
        .issue(
            rogue_id,
            UnitType::Recovery,
            &rogue_key.verifying_key().into(),
        )
        .unwrap();
    for len in [25usize, 31] {
        let out = ok(run(&mut op, ca, &Command::GenerateImporter, &[w.a(0)]));
        let importer = CertifiedImporter::from_der(&out)
            .unwrap()
            .verify(op.device_certificate())
            .unwrap();
        let (eph_point, kek) = member_kek(rogue_id, op.id(), &importer.key().unwrap());
        let wrapped = aes_kw::KekAes256::from(*kek.expose_secret())
            .wrap_with_padding_vec(&vec![0x42; len])
            .unwrap();
        assert_eq!(wrapped.len(), 40);
        let envelope = MkEnvelope {
            source_unit_id: rogue_id,
            target_unit_id: op.id(),
            importer_key_id: importer.key_id,
            ephemeral_public_key: OctetString::new(eph_point.to_vec()).unwrap(),
            wrapped_key: OctetString::new(wrapped).unwrap(),
            vp: Vp([1; 32]),
        };
        let signed = SignedEnvelope::sign(&envelope, &rogue_cert, |c, b| {
            let s: Signature = rogue_key.sign(&c.signed_bytes(b));
            Ok(s.to_der())
        })
        .unwrap();
        let mut before = op.status();
        fails(
            &run(&mut op, ca, &Command::ImportMk(Box::new(signed)), &[w.a(0)]),
            ModuleError::INVALID_DATA,
        );
        before.importer_pending = false;
        assert_unchanged(&op, &before, true);
    }
    // The unit still imports a good key afterwards.
    let mut rec = w.ready(f, "rec", UnitType::Recovery);
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    let vp = load(&w, &mut rec, &mut op);
    assert_eq!(op.status().current_register, valid(vp));
}

pub fn export_checks_target(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut rec = w.ready(f, "rec", UnitType::Recovery);
    let mut op = w.ready(f, "op", UnitType::Operational);
    let mut op2 = w.ready(f, "op2", UnitType::Operational);
    // Nothing to export yet.
    let req = export_request(&w, &mut op, Register::Current);
    let before = rec.status();
    fails(
        &run(
            &mut rec,
            ca,
            &Command::ExportMk(Box::new(req.clone())),
            &[w.a(0), w.a(1)],
        ),
        ModuleError::REGISTER_STATE,
    );
    assert_unchanged(&rec, &before, true);
    // The importer checks come before the register check (protocol.md §11): an importer
    // certified by another unit than the certificate names is 3/102, registers empty.
    let other = export_request(&w, &mut op2, Register::Current);
    let mixed = ExportRequest {
        importer: other.importer.clone(),
        ..req.clone()
    };
    fails(
        &run(
            &mut rec,
            ca,
            &Command::ExportMk(Box::new(mixed.clone())),
            &[w.a(0), w.a(1)],
        ),
        ModuleError::INVALID_IMPORTER,
    );
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    let new_req = ExportRequest {
        register: Register::New,
        ..req.clone()
    };
    fails(
        &run(
            &mut rec,
            ca,
            &Command::ExportMk(Box::new(new_req)),
            &[w.a(0), w.a(1)],
        ),
        ModuleError::REGISTER_STATE,
    );
    fails(
        &run(
            &mut rec,
            ca,
            &Command::ExportMk(Box::new(req.clone())),
            &[w.a(0)],
        ),
        ModuleError::NOT_ENOUGH_SIGNATURES,
    );

    // A target outside the fleet.
    let w2 = World::new(3);
    let mut foreign = w2.ready(f, "foreign", UnitType::Operational);
    let foreign_req = {
        let out = ok(run(
            &mut foreign,
            &w2.fleet.ca,
            &Command::GenerateImporter,
            &[w2.a(0)],
        ));
        ExportRequest {
            register: Register::Current,
            target_certificate: OctetString::new(foreign.device_certificate().der().to_vec())
                .unwrap(),
            importer: CertifiedImporter::from_der(&out).unwrap(),
            target_instance: None,
        }
    };
    // The recovery unit itself as the target.
    let own = {
        let mut r = ExportRequest { ..req.clone() };
        r.target_certificate = OctetString::new(rec.device_certificate().der().to_vec()).unwrap();
        r
    };
    let before = rec.status();
    let mut n = 0;
    for bad in [mixed, foreign_req, own] {
        fails(
            &run(
                &mut rec,
                ca,
                &Command::ExportMk(Box::new(bad)),
                &[w.a(0), w.a(1)],
            ),
            ModuleError::INVALID_IMPORTER,
        );
        n += 1;
    }
    let mut expected = before;
    expected.counter += n;
    assert_eq!(rec.status(), expected);
    ok(run(
        &mut rec,
        ca,
        &Command::ExportMk(Box::new(req)),
        &[w.a(0), w.a(1)],
    ));
}

/// A unit imports only envelopes whose source certificate, as the fleet CA issued it,
/// says `recovery` and names the unit's own instance. The envelope below is otherwise
/// good: signed by the key its certificate certifies, wrapped for the pending importer,
/// and accepted once its source is certified as a recovery unit of the instance.
pub fn import_only_from_a_recovery_unit_of_the_instance(f: &dyn UnitFactory) {
    use tke_proto::UnitDescription;
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut op = w.ready(f, "op", UnitType::Operational);
    let importer = certified_importer(&w, &mut op)
        .verify(op.device_certificate())
        .unwrap();
    // A fleet member (the test holds the CA key) seals a key for that importer.
    let member = Member::sealing_for(&op, &importer);
    let signed_as = |unit_type, instance_id| {
        let described = UnitDescription {
            unit_type,
            instance_id,
        };
        Command::ImportMk(Box::new(member.signed_as(&w.fleet, described)))
    };
    let other_instance = w.fleet.another_instance().instance;
    // An operational source, a failover source, a recovery unit of another instance:
    // nothing changes, the importer key is still pending.
    all_refused(
        &mut op,
        ca,
        [
            signed_as(UnitType::Operational, w.fleet.instance),
            signed_as(UnitType::Failover, w.fleet.instance),
            signed_as(UnitType::Recovery, other_instance),
        ],
        &[w.a(0)],
        ModuleError::INVALID_IMPORTER,
    );
    let signed = signed_as(UnitType::Recovery, w.fleet.instance);
    let vp = vp_of(&ok(run(&mut op, ca, &signed, &[w.a(0)])));
    assert_eq!(vp, member.mk.vp());
}

/// A recovery unit exports only to a target whose certificate names its own instance,
/// even one certified by the same fleet CA.
pub fn export_only_to_the_instance(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut rec = w.ready(f, "rec", UnitType::Recovery);
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    // A unit of another instance of the same fleet, with all administrators installed.
    let other = World {
        dir: tempfile::tempdir().unwrap(),
        fleet: w.fleet.another_instance(),
        admins: support_admins(3),
    };
    let mut foreign = other.ready(f, "foreign", UnitType::Operational);
    assert_eq!(
        foreign.device_certificate().instance_id(),
        other.fleet.instance
    );
    let req = export_request(&other, &mut foreign, Register::Current);
    let before = rec.status();
    let foreign_before = foreign.status();
    fails(
        &run(
            &mut rec,
            ca,
            &Command::ExportMk(Box::new(req)),
            &[w.a(0), w.a(1)],
        ),
        ModuleError::INVALID_IMPORTER,
    );
    assert_unchanged(&rec, &before, true);
    assert_unchanged(&foreign, &foreign_before, false);
    // A target of the instance gets the key.
    let mut op = w.ready(f, "op", UnitType::Operational);
    let vp = load(&w, &mut rec, &mut op);
    assert_eq!(op.status().current_register, valid(vp));
}

/// A unit of `fleet` (another instance of `w`'s CA, or another CA) with its own three
/// administrators installed and thresholds 2/2.
fn world_of(fleet: Fleet) -> World {
    World {
        dir: tempfile::tempdir().unwrap(),
        fleet,
        admins: support_admins(3),
    }
}

/// `exportMk` of `rec`'s current register to a fresh importer of `target`, naming
/// `target_instance`.
fn export_naming(
    w: &World,
    rec: &mut Unit,
    tw: &World,
    target: &mut Unit,
    target_instance: Option<tke_proto::InstanceId>,
) -> ResponseBody {
    let req = ExportRequest {
        target_instance,
        ..export_request(tw, target, Register::Current)
    };
    run(
        rec,
        &w.fleet.ca,
        &Command::ExportMk(Box::new(req)),
        &[w.a(0), w.a(1)],
    )
}

/// A master key crosses service instances of one fleet CA only when both quorums name
/// the other instance (`docs/protocol.md` §11.3): the export names the target's instance,
/// the import (under the target's signature threshold) names the source's, and the target
/// holds no key of its own. Every refusal changes nothing but the counter.
pub fn cross_instance_transport(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut rec = w.ready(f, "rec", UnitType::Recovery);
    let vp = vp_of(&ok(run(
        &mut rec,
        ca,
        &Command::GenerateRandomMk,
        &[w.a(0)],
    )));
    let b = world_of(w.fleet.another_instance());
    let third = w.fleet.another_instance().instance;
    let mut op_b = b.ready(f, "op-b", UnitType::Operational);

    // The source side: the export must name exactly the target's instance; naming an
    // instance for a target of the source's own instance is refused too.
    let export = |tw: &World, target: &mut Unit, target_instance| {
        Command::ExportMk(Box::new(ExportRequest {
            target_instance,
            ..export_request(tw, target, Register::Current)
        }))
    };
    let mut op_a = w.ready(f, "op-a", UnitType::Operational);
    all_refused(
        &mut rec,
        ca,
        [
            export(&b, &mut op_b, None),
            export(&b, &mut op_b, Some(third)),
            export(&b, &mut op_b, Some(w.fleet.instance)),
            export(&w, &mut op_a, Some(b.fleet.instance)),
        ],
        &[w.a(0), w.a(1)],
        ModuleError::INVALID_IMPORTER,
    );
    let out = ok(export_naming(
        &w,
        &mut rec,
        &b,
        &mut op_b,
        Some(b.fleet.instance),
    ));
    let envelope = SignedEnvelope::from_der(&out).unwrap();
    assert_eq!(envelope.source_instance, None, "a unit never fills it in");

    // The target side: the import must name exactly the source's instance, with the
    // target's signature threshold.
    let bca = &b.fleet.ca;
    let before = op_b.status();
    assert!(before.importer_pending);
    let naming = |i| {
        Command::ImportMk(Box::new(SignedEnvelope {
            source_instance: i,
            ..envelope.clone()
        }))
    };
    all_refused(
        &mut op_b,
        bca,
        [None, Some(third), Some(b.fleet.instance)].map(naming),
        &[b.a(0), b.a(1)],
        ModuleError::INVALID_IMPORTER,
    );
    let import = naming(Some(w.fleet.instance));
    // One signature is enough for a same-instance import, not for this one (refused
    // before the counter).
    let refused = op_b.status();
    fails(
        &run(&mut op_b, bca, &import, &[b.a(0)]),
        ModuleError::NOT_ENOUGH_SIGNATURES,
    );
    assert_eq!(op_b.status(), refused, "importer still pending");
    assert_eq!(
        vp_of(&ok(run(&mut op_b, bca, &import, &[b.a(0), b.a(1)]))),
        vp
    );
    ok(run(
        &mut op_b,
        bca,
        &Command::CommitMk(vp),
        &[b.a(0), b.a(1)],
    ));
    ok(run(&mut op_b, bca, &Command::SetImmediate(vp), &[b.a(0)]));
    assert_eq!(op_b.status().current_register, valid(vp));

    // A target holding a key of its own never takes one from another instance: it stays,
    // and the importer key is used up.
    let mut rec_b = b.ready(f, "rec-b", UnitType::Recovery);
    ok(run(&mut rec_b, bca, &Command::GenerateRandomMk, &[b.a(0)]));
    let mut holder = b.ready(f, "holder-b", UnitType::Operational);
    let own_vp = load(&b, &mut rec_b, &mut holder);
    let out = ok(export_naming(
        &w,
        &mut rec,
        &b,
        &mut holder,
        Some(b.fleet.instance),
    ));
    let envelope = SignedEnvelope {
        source_instance: Some(w.fleet.instance),
        ..SignedEnvelope::from_der(&out).unwrap()
    };
    let before = holder.status();
    fails(
        &run(
            &mut holder,
            bca,
            &Command::ImportMk(Box::new(envelope)),
            &[b.a(0), b.a(1)],
        ),
        ModuleError::REGISTER_STATE,
    );
    let mut expected = before;
    expected.counter += 1;
    expected.importer_pending = false;
    assert_eq!(holder.status(), expected);
    assert_eq!(holder.status().current_register, valid(own_vp));
}

/// Naming the instance does not widen trust beyond the fleet CA: a target or a source
/// certified by another CA is refused whatever the fields say.
pub fn cross_instance_needs_the_same_fleet_ca(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut rec = w.ready(f, "rec", UnitType::Recovery);
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    let x = world_of(Fleet::new("another fleet"));
    let mut op_x = x.ready(f, "op-x", UnitType::Operational);
    let before = rec.status();
    fails(
        &export_naming(&w, &mut rec, &x, &mut op_x, Some(x.fleet.instance)),
        ModuleError::INVALID_IMPORTER,
    );
    assert_unchanged(&rec, &before, true);

    // The import side: a recovery unit certified by the other CA, for the other CA's
    // instance, seals a key for this unit's importer; named or not, it is refused.
    let mut op = w.ready(f, "op", UnitType::Operational);
    let importer = certified_importer(&w, &mut op)
        .verify(op.device_certificate())
        .unwrap();
    let signed = Member::sealing_for(&op, &importer).signed_as(
        &x.fleet,
        tke_proto::UnitDescription {
            unit_type: UnitType::Recovery,
            instance_id: x.fleet.instance,
        },
    );
    let naming = |source_instance| {
        Command::ImportMk(Box::new(SignedEnvelope {
            source_instance,
            ..signed.clone()
        }))
    };
    all_refused(
        &mut op,
        ca,
        [naming(None), naming(Some(x.fleet.instance))],
        &[w.a(0), w.a(1)],
        ModuleError::INVALID_IMPORTER,
    );
}

/// `exportMkBatch`: one quorum-signed command seals the key for several targets, in
/// order; it is all or nothing, recovery only, and takes 1 to 16 requests.
/// The device key's three signatures (a response, an importer certification, an envelope)
/// each verify only as their own kind: presented as one of the other kinds, with the very
/// bytes the unit signed, each is refused by its signature, before anything is decoded;
/// and a unit refuses to import an envelope made of a response and its signature.
pub fn device_signatures_bound_to_their_kind(f: &dyn UnitFactory) {
    use tke_proto::{DeviceContext, ProtoError, SignedResponse};
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut rec = w.ready(f, "rec", UnitType::Recovery);
    let mut op = w.ready(f, "op", UnitType::Operational);
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    // One signature of each kind by the recovery unit's device key.
    let request = Request::Query(Query {
        unit_id: rec.id(),
        nonce: Nonce::random(),
    })
    .to_der()
    .unwrap();
    let response = SignedResponse::from_der(&rec.handle(&request)).unwrap();
    let importer = CertifiedImporter::from_der(&ok(run(
        &mut rec,
        ca,
        &Command::GenerateImporter,
        &[w.a(0)],
    )))
    .unwrap();
    let envelope = export_to(&w, &mut rec, &mut op, Register::Current);
    let signed = [
        (DeviceContext::Response, &response.body, &response.signature),
        (
            DeviceContext::Importer,
            &importer.importer,
            &importer.signature,
        ),
        (
            DeviceContext::Envelope,
            &envelope.envelope,
            &envelope.signature,
        ),
    ];
    let cert = rec.device_certificate().clone();
    let cert_der = OctetString::new(cert.der().to_vec()).unwrap();
    for (kind, message, signature) in signed {
        let (message, signature) = (message.clone(), signature.clone());
        let as_response = SignedResponse {
            body: message.clone(),
            signature: signature.clone(),
        }
        .verify(&cert.verifying_key(), &rec.id(), &request)
        .map(drop);
        let as_importer = CertifiedImporter {
            importer: message.clone(),
            signature: signature.clone(),
        }
        .verify(&cert)
        .map(drop);
        let as_envelope = SignedEnvelope {
            envelope: message.clone(),
            signature: signature.clone(),
            source_certificate: cert_der.clone(),
            source_instance: None,
        }
        .verify(ca)
        .map(drop);
        for (context, result) in [
            (DeviceContext::Response, as_response),
            (DeviceContext::Importer, as_importer),
            (DeviceContext::Envelope, as_envelope),
        ] {
            if context == kind {
                result.unwrap_or_else(|e| panic!("{}: a genuine {kind:?}: {e}", f.name()));
                continue;
            }
            let refused_by_signature = match (&result, context) {
                (Err(ProtoError::ResponseSignature { unit }), DeviceContext::Response) => {
                    *unit == rec.id()
                }
                (Err(ProtoError::Transport(what)), DeviceContext::Importer) => {
                    *what == tke_proto::TransportError::ImporterNotCertified
                }
                (Err(ProtoError::Transport(what)), DeviceContext::Envelope) => {
                    *what == tke_proto::TransportError::EnvelopeNotSigned
                }
                _ => false,
            };
            assert!(
                refused_by_signature,
                "{}: the unit's {kind:?} signature presented as {context:?}: {result:?}",
                f.name()
            );
        }
    }
    // Through the unit: a response and its signature offered as an envelope.
    let before = op.status();
    let forged = SignedEnvelope {
        envelope: response.body.clone(),
        signature: response.signature.clone(),
        source_certificate: cert_der,
        source_instance: None,
    };
    fails(
        &run(&mut op, ca, &Command::ImportMk(Box::new(forged)), &[w.a(0)]),
        ModuleError::INVALID_IMPORTER,
    );
    assert_unchanged(&op, &before, true);
    // The genuine envelope still imports.
    ok(run(
        &mut op,
        ca,
        &Command::ImportMk(Box::new(envelope)),
        &[w.a(0)],
    ));
}

/// A fleet member whose device key signs the way protocol version 1 (the bare message) or
/// version 2 (under the version 2 label) does: its envelopes and importer keys are refused
/// (3/102) before anything is used up, naming the version; the same member signing as
/// version 3 is accepted.
pub fn older_device_signatures_refused(f: &dyn UnitFactory) {
    use tke_proto::p256::ecdsa::{signature::Signer as _, Signature, SigningKey};
    use tke_proto::{
        transport::{soft_seal, ImporterKey},
        DeviceContext, MasterKey, ProtoError,
    };
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut rec = w.ready(f, "rec", UnitType::Recovery);
    let mut op = w.ready(f, "op", UnitType::Operational);
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    let member_key = SigningKey::random(&mut rand_core::OsRng);
    let member_id = UnitId::random();
    let member_cert = w
        .fleet
        .issue(
            member_id,
            UnitType::Recovery,
            &member_key.verifying_key().into(),
        )
        .unwrap();
    for version in [1, 2] {
        let old_signer = |c: DeviceContext, m: &[u8]| {
            let s: Signature = member_key.sign(&c.signed_bytes_of_version(version, m));
            Ok(s.to_der())
        };
        let current = |c: DeviceContext, m: &[u8]| {
            let s: Signature = member_key.sign(&c.signed_bytes(m));
            Ok(s.to_der())
        };
        let version_error = |e: ProtoError, what: &str| {
            assert!(
                matches!(
                    e,
                    ProtoError::ProtocolVersion { unit, what: w, found, expected: 4 }
                        if unit == member_id && w == what && found == version
                ),
                "{}: {e:?}",
                f.name()
            );
        };

        // The member as a source: an envelope for op's pending importer.
        let out = ok(run(&mut op, ca, &Command::GenerateImporter, &[w.a(0)]));
        let importer = CertifiedImporter::from_der(&out)
            .unwrap()
            .verify(op.device_certificate())
            .unwrap();
        let envelope = soft_seal(&MasterKey::random(), member_id, &importer).unwrap();
        let old = SignedEnvelope::sign(&envelope, &member_cert, old_signer).unwrap();
        version_error(old.verify(ca).unwrap_err(), "envelope");
        let before = op.status();
        fails(
            &run(&mut op, ca, &Command::ImportMk(Box::new(old)), &[w.a(0)]),
            ModuleError::INVALID_IMPORTER,
        );
        // Refused before the importer key is reached: it stays pending.
        assert_unchanged(&op, &before, true);
        let new = SignedEnvelope::sign(&envelope, &member_cert, current).unwrap();
        ok(run(
            &mut op,
            ca,
            &Command::ImportMk(Box::new(new)),
            &[w.a(0)],
        ));
        ok(run(&mut op, ca, &Command::ClearNew, &[w.a(0)]));

        // The member as a target: an importer key it certifies for rec to export to.
        let secret = tke_proto::p256::SecretKey::random(&mut rand_core::OsRng);
        let key = ImporterKey::new(member_id, &secret.public_key()).unwrap();
        let request = |importer| ExportRequest {
            register: Register::Current,
            target_certificate: OctetString::new(member_cert.der().to_vec()).unwrap(),
            importer,
            target_instance: None,
        };
        let old = CertifiedImporter::sign(&key, old_signer).unwrap();
        version_error(old.verify(&member_cert).unwrap_err(), "importer key");
        let before = rec.status();
        fails(
            &run(
                &mut rec,
                ca,
                &Command::ExportMk(Box::new(request(old))),
                &[w.a(0), w.a(1)],
            ),
            ModuleError::INVALID_IMPORTER,
        );
        assert_unchanged(&rec, &before, true);
        let new = CertifiedImporter::sign(&key, current).unwrap();
        ok(run(
            &mut rec,
            ca,
            &Command::ExportMk(Box::new(request(new))),
            &[w.a(0), w.a(1)],
        ));
    }
}

pub fn export_batch(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let quorum = [w.a(0), w.a(1)];
    let mut rec = w.ready(f, "rec", UnitType::Recovery);
    let mut op = w.ready(f, "op", UnitType::Operational);
    let mut op2 = w.ready(f, "op2", UnitType::Operational);
    let mut fo = w.ready(f, "fo", UnitType::Failover);
    let vp = vp_of(&ok(run(
        &mut rec,
        ca,
        &Command::GenerateRandomMk,
        &[w.a(0)],
    )));
    let reqs = vec![
        export_request(&w, &mut op, Register::Current),
        export_request(&w, &mut op2, Register::Current),
        export_request(&w, &mut fo, Register::Current),
    ];
    let batch = |r: Vec<ExportRequest>| Command::ExportMkBatch(r);

    // Refusals first; none of them seals anything.
    let before = rec.status();
    fails(
        &run(&mut rec, ca, &batch(reqs.clone()), &[w.a(0)]),
        ModuleError::NOT_ENOUGH_SIGNATURES,
    );
    assert_unchanged(&rec, &before, false);
    // No target, or more than 16: malformed input, refused before the counter.
    for bad in [vec![], vec![reqs[0].clone(); 17]] {
        fails(
            &run(&mut rec, ca, &batch(bad), &quorum),
            ModuleError::INVALID_DATA,
        );
        assert_unchanged(&rec, &before, false);
    }
    // One bad request (the source itself as a target) fails the whole batch.
    let mut own = reqs[1].clone();
    own.target_certificate = OctetString::new(rec.device_certificate().der().to_vec()).unwrap();
    fails(
        &run(&mut rec, ca, &batch(vec![reqs[0].clone(), own]), &quorum),
        ModuleError::INVALID_IMPORTER,
    );
    assert_unchanged(&rec, &before, true);
    // Operational and failover units never export, batched or not.
    for src in [&mut op, &mut fo] {
        let before = src.status();
        fails(
            &run(src, ca, &batch(vec![reqs[1].clone()]), &quorum),
            ModuleError::EXPORT_FORBIDDEN,
        );
        assert_unchanged(src, &before, true);
    }

    // The good batch: one envelope per request, in order, each for its own target.
    let out = ok(run(&mut rec, ca, &batch(reqs), &quorum));
    let envelopes = Vec::<SignedEnvelope>::from_der(&out).unwrap();
    assert_eq!(envelopes.len(), 3);
    for (target, env) in [&mut op, &mut op2, &mut fo].into_iter().zip(envelopes) {
        let (inner, source) = env.verify(ca).unwrap();
        assert_eq!(
            (inner.target_unit_id, source.unit_id()),
            (target.id(), rec.id())
        );
        let got = vp_of(&ok(run(
            target,
            ca,
            &Command::ImportMk(Box::new(env)),
            &[w.a(2)],
        )));
        assert_eq!(got, vp);
        ok(run(target, ca, &Command::CommitMk(vp), &quorum));
        ok(run(target, ca, &Command::SetImmediate(vp), &[w.a(1)]));
        assert_eq!(target.status().current_register, valid(vp));
    }
}

pub fn clear_registers(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut rec = w.ready(f, "rec", UnitType::Recovery);
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    let vp2 = vp_of(&ok(run(
        &mut rec,
        ca,
        &Command::GenerateRandomMk,
        &[w.a(0)],
    )));
    // A recovery unit's current register is cleared by the signature threshold.
    ok(run(&mut rec, ca, &Command::ClearCurrent, &[w.a(0), w.a(1)]));
    let s = rec.status();
    assert_eq!(s.current_register, RegisterStatus::EMPTY);
    assert_eq!(s.new_register, full(RegisterState::FullUncommitted, vp2));
    ok(run(&mut rec, ca, &Command::ClearNew, &[w.a(0)]));
    assert_eq!(rec.status().new_register, RegisterStatus::EMPTY);
    // Clearing an empty register is harmless.
    ok(run(&mut rec, ca, &Command::ClearNew, &[w.a(0)]));
    ok(run(&mut rec, ca, &Command::ClearCurrent, &[w.a(1), w.a(2)]));
    let s = rec.status();
    let reopened = f.reopen(&w.path("rec"));
    assert_eq!(reopened.status(), s);
}

/// A recovery unit holds the instance's last copy of the master key: one administrator
/// can neither clear its current register nor zeroize it; the signature threshold can. An
/// operational unit still takes one signature for both.
pub fn recovery_destruction_needs_quorum(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut rec = w.ready(f, "rec", UnitType::Recovery);
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    let before = rec.status();
    for command in [Command::ClearCurrent, Command::Zeroize] {
        for one in &w.admins {
            fails(
                &run(&mut rec, ca, &command, &[one]),
                ModuleError::NOT_ENOUGH_SIGNATURES,
            );
            // Refused before the counter is consumed: nothing changed.
            assert_unchanged(&rec, &before, false);
        }
    }
    assert_eq!(f.reopen(&w.path("rec")).status(), before);

    // The signature threshold (2 of 3) clears the current register.
    ok(run(&mut rec, ca, &Command::ClearCurrent, &[w.a(0), w.a(2)]));
    assert_eq!(rec.status().current_register, RegisterStatus::EMPTY);
    assert_eq!(rec.status().new_register, before.new_register);
    ok(run(&mut rec, ca, &Command::Zeroize, &[w.a(1), w.a(2)]));
    let s = rec.status();
    assert!(s.admins.is_empty());
    assert_eq!((s.sig_threshold, s.rev_threshold), (0, 0));
    assert_eq!(s.new_register, RegisterStatus::EMPTY);

    // An operational unit: one signature for each.
    let mut rec = w.ready(f, "rec2", UnitType::Recovery);
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    let mut op = w.ready(f, "op", UnitType::Operational);
    load(&w, &mut rec, &mut op);
    ok(run(&mut op, ca, &Command::ClearCurrent, &[w.a(0)]));
    assert_eq!(op.status().current_register, RegisterStatus::EMPTY);
    ok(run(&mut op, ca, &Command::Zeroize, &[w.a(2)]));
    assert!(op.status().admins.is_empty());
}

pub fn zeroize_keeps_counter(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut rec = w.unit(f, "rec", UnitType::Recovery);
    let first = signed_command(
        rec.id(),
        1,
        &Command::AddAdmin(w.a(0).certificate().clone()),
        &[],
    );
    ok(send(&mut rec, ca, &Request::Command(first.clone())));
    for a in &w.admins[1..] {
        ok(run(
            &mut rec,
            ca,
            &Command::AddAdmin(a.certificate().clone()),
            &[],
        ));
    }
    let two = Threshold::new(2).unwrap();
    ok(run(
        &mut rec,
        ca,
        &Command::SetThresholds {
            signature: two,
            revocation: two,
        },
        &[w.a(0), w.a(1)],
    ));
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    ok(run(&mut rec, ca, &Command::GenerateImporter, &[w.a(0)]));
    let counter = rec.status().counter;
    ok(run(&mut rec, ca, &Command::Zeroize, &[w.a(1), w.a(2)]));
    let s = query(&mut rec, ca);
    assert_eq!(
        s,
        UnitStatus {
            unit_id: rec.id(),
            unit_type: UnitType::Recovery,
            counter: counter + 1,
            sig_threshold: 0,
            rev_threshold: 0,
            admins: Vec::new(),
            new_register: RegisterStatus::EMPTY,
            current_register: RegisterStatus::EMPTY,
            importer_pending: false,
            control_points: tke_proto::ControlPoints::DEFAULT,
        }
    );
    // Old commands stay unreplayable.
    fails(
        &send(&mut rec, ca, &Request::Command(first)),
        ModuleError::INVALID_COUNTER,
    );
    // Zeroize in imprint mode needs no signature, and the unit can be set up again.
    ok(run(&mut rec, ca, &Command::Zeroize, &[]));
    init(&mut rec, ca, &w.admins, 2, 2);
    assert_eq!(f.reopen(&w.path("rec")).status(), rec.status());
}

pub fn state_survives_reopen(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let rec_dir = w.path("rec");
    let op_dir = w.path("op");
    let status;
    let env;
    {
        let mut rec = w.ready(f, "rec", UnitType::Recovery);
        let mut op = w.ready(f, "op", UnitType::Operational);
        ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
        ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
        env = export_to(&w, &mut rec, &mut op, Register::New);
        status = (rec.status(), op.status());
        assert!(status.1.importer_pending);
    }
    let mut rec = f.reopen(&rec_dir);
    let mut op = f.reopen(&op_dir);
    assert_eq!((rec.status(), op.status()), status);
    assert_eq!(query(&mut rec, ca), status.0);
    assert_eq!(rec.unit_type(), UnitType::Recovery);
    assert_eq!(rec.ca_certificate(), ca);
    // The secrets came back too: the pending importer opens the envelope, and the
    // reopened recovery unit exports its current key.
    let vp = vp_of(&ok(run(
        &mut op,
        ca,
        &Command::ImportMk(Box::new(env)),
        &[w.a(0)],
    )));
    assert_eq!(Some(vp), status.0.new_register.vp);
    ok(run(&mut op, ca, &Command::CommitMk(vp), &[w.a(0), w.a(1)]));
    ok(run(&mut op, ca, &Command::SetImmediate(vp), &[w.a(0)]));
    let mut op2 = w.ready(f, "op2", UnitType::Operational);
    assert_eq!(
        Some(load(&w, &mut rec, &mut op2)),
        status.0.current_register.vp
    );
    let s = op.status();
    drop(op);
    assert_eq!(f.reopen(&op_dir).status(), s);
}

pub fn fuzzed_requests_never_panic(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut rec = w.ready(f, "rec", UnitType::Recovery);
    let mut op = w.ready(f, "op", UnitType::Operational);
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    let req = export_request(&w, &mut op, Register::Current);
    let c = rec.status().counter + 1;
    let env = {
        let cmd = Command::ExportMk(Box::new(req.clone()));
        let out = ok(run(&mut rec, ca, &cmd, &[w.a(0), w.a(1)]));
        SignedEnvelope::from_der(&out).unwrap()
    };
    let parts_req = tke_proto::parts::seal_parts(
        &[
            tke_proto::parts::MasterKeyPart::random(),
            tke_proto::parts::MasterKeyPart::random(),
        ],
        &req.importer,
        op.device_certificate(),
    )
    .unwrap();
    let id = rec.id();
    let (roots, vp) = service::generate(&w, &mut rec, 2);
    let service_request = |op| Request::Service(tke_proto::ServiceRequest::new(id, op));
    let wrapped = ok(service::service(
        &w,
        &mut rec,
        tke_proto::ServiceOp::WrapData(tke_proto::WrapData {
            vp,
            root: roots[0].clone(),
            data: tke_proto::SecretOctets::new(vec![7; 16]),
        }),
    ));
    let seeds: Vec<Vec<u8>> = [
        Request::Command(signed_command(
            op.id(),
            op.status().counter + 1,
            &Command::ImportMkParts(Box::new(parts_req)),
            &[w.a(0)],
        )),
        Request::Command(signed_command(
            id,
            c + 1,
            &Command::AddControlPoints(tke_proto::ControlPoints::DEFAULT),
            &[w.a(0), w.a(1)],
        )),
        Request::Query(Query {
            unit_id: id,
            nonce: Nonce::random(),
        }),
        Request::Command(signed_command(
            id,
            c + 1,
            &Command::GenerateRandomMk,
            &[w.a(0)],
        )),
        Request::Command(signed_command(
            id,
            c + 1,
            &Command::ExportMk(Box::new(req)),
            &[w.a(0), w.a(1)],
        )),
        Request::Command(signed_command(
            id,
            c + 1,
            &Command::ImportMk(Box::new(env)),
            &[w.a(0)],
        )),
        Request::Command(signed_command(
            id,
            c + 1,
            &Command::AddAdmin(MemSigner::new("x").certificate().clone()),
            &[w.a(0), w.a(1)],
        )),
        Request::Command(signed_command(
            id,
            c + 1,
            &Command::SetThresholds {
                signature: Threshold::new(2).unwrap(),
                revocation: Threshold::new(3).unwrap(),
            },
            &[w.a(0), w.a(1), w.a(2)],
        )),
    ]
    .iter()
    .map(|r| r.to_der().unwrap())
    .collect();
    // Key-service requests, fuzzed in a pass of their own after the commands'.
    let service_seeds: Vec<Vec<u8>> = [
        service_request(tke_proto::ServiceOp::GenerateKeys(2)),
        service_request(tke_proto::ServiceOp::UnwrapData(tke_proto::UnwrapData {
            vp,
            root: roots[0].clone(),
            wrapped: OctetString::new(wrapped).unwrap(),
        })),
        service_request(tke_proto::ServiceOp::Rewrap(tke_proto::Rewrap {
            from: vp,
            to: vp,
            keys: roots.clone(),
        })),
    ]
    .iter()
    .map(|r| r.to_der().unwrap())
    .collect();
    let mut rng = tke_test_support::Rng(0x7ce1_2024_5eed_0001);
    let mut codes = std::collections::BTreeSet::new();
    for i in 0..4000 {
        // 3000 mutated commands and queries, then 1000 mutated service requests.
        let seeds = if i < 3000 { &seeds } else { &service_seeds };
        let mut input = seeds[rng.below(seeds.len())].clone();
        match i % 6 {
            0 => {
                for _ in 0..=rng.below(4) {
                    let p = rng.below(input.len());
                    input[p] ^= 1 << rng.below(8);
                }
            }
            1 => {
                let p = rng.below(input.len());
                input[p] = rng.next() as u8;
            }
            2 => input.truncate(rng.below(input.len())),
            3 => {
                let p = rng.below(input.len());
                let extra: Vec<u8> = (0..=rng.below(8)).map(|_| rng.next() as u8).collect();
                input.splice(p..p, extra);
            }
            4 => {
                let other = &seeds[rng.below(seeds.len())];
                let (a, b) = (rng.below(input.len()), rng.below(other.len()));
                input.truncate(a);
                input.extend_from_slice(&other[b..]);
            }
            _ => input = (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
        }
        let target = if i % 2 == 0 { &mut rec } else { &mut op };
        // `send_raw` asserts that the answer is signed, bound to the input and carries
        // the counter.
        let body = send_raw(target, ca, &input);
        codes.insert(body.return_code);
        if body.return_code == 0 {
            // At most a full service batch (1,024 wrapped keys).
            assert!(body.output.as_bytes().len() < 64 * 1024);
        }
    }
    // The mutations reached past the decoder into the checks behind it.
    for rc in [3, 32, 96, 102, 163, 192] {
        assert!(
            codes.contains(&rc),
            "return code {rc} never seen: {codes:?}"
        );
    }
    // Both units are still consistent in their stores.
    for (name, u) in [("rec", &rec), ("op", &op)] {
        assert_eq!(f.reopen(&w.path(name)).status(), u.status());
    }
}

/// A state save that fails is reported to the host, and changes nothing: the unit answers
/// an internal error, keeps its state (the counter is not consumed), its store keeps the
/// previous record, and the same signed command runs once saves work again.
pub fn save_failure_is_reported(f: &MemoryFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut rec = w.ready(f, "rec", UnitType::Recovery);
    ok(run(&mut rec, ca, &Command::GenerateRandomMk, &[w.a(0)]));
    let before = rec.status();
    let saved = f.saved(&w.path("rec"));
    assert!(saved.is_some());

    f.fail_saves(&w.path("rec"), true);
    // Queries save nothing: they still work.
    assert_eq!(query(&mut rec, ca), before);
    // A command whose save fails: it made a master key in the backend first.
    let command = Request::Command(signed_command(
        rec.id(),
        before.counter + 1,
        &Command::GenerateRandomMk,
        &[w.a(0)],
    ))
    .to_der()
    .unwrap();
    let (body, causes) = send_reporting(&mut rec, ca, &command);
    fails(&body, ModuleError::INTERNAL);
    assert_eq!(body.counter, before.counter, "the counter is not consumed");
    let [cause] = causes.as_slice() else {
        panic!("one cause expected: {causes:?}");
    };
    match cause {
        InternalError::SaveState {
            unit,
            location,
            source,
        } => {
            assert_eq!(*unit, rec.id());
            assert_eq!(location, MemoryStore::new().location());
            assert_eq!(source.kind(), std::io::ErrorKind::StorageFull);
            assert_eq!(source.to_string(), SAVE_FAILURE);
        }
        other => panic!("a save failure expected: {other:?}"),
    }
    let shown = cause.to_string();
    assert!(shown.contains(&rec.id().uuid().to_string()), "{shown}");
    assert_unchanged(&rec, &before, false);
    assert_eq!(
        f.saved(&w.path("rec")),
        saved,
        "the store keeps the previous state"
    );
    assert_eq!(f.reopen(&w.path("rec")).status(), before);

    f.fail_saves(&w.path("rec"), false);
    let (body, causes) = send_reporting(&mut rec, ca, &command);
    let vp = vp_of(&ok(body));
    assert!(causes.is_empty());
    let after = rec.status();
    assert_eq!(after.counter, before.counter + 1);
    assert_eq!(after.new_register, full(RegisterState::FullUncommitted, vp));
    assert_eq!(f.reopen(&w.path("rec")).status(), after);
}
