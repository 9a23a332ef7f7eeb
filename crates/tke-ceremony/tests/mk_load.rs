//! Loading the new master key register from master key parts on an embedded fleet, through
//! the library alone: the load, every precondition of both stages refused with nothing
//! sent, reloading the same parts after activation refused, and reloading them into a
//! unit whose current register was cleared (recovering a key-part instance).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{info, World};
use tke_ceremony::{
    CeremonyError, LoadPlan, MkLoad, MkRegister, Problem, Quorum, RegisterAction, Rule,
};
use tke_client::{ClientError, KnownUnit};
use tke_proto::{
    parts::MasterKeyPart, AdminInfo, MasterKey, ModuleError, RegisterState, RegisterStatus,
    UnitStatus, UnitType, Vp,
};
use tke_sigkey::Signer;
use tke_sigkey_file::FileSigner;

/// The operational units (1 and 2 of the default fleet).
fn operational(w: &World) -> Vec<&KnownUnit> {
    w.client
        .units()
        .iter()
        .filter(|u| u.unit_type() == UnitType::Operational)
        .collect()
}

/// A part of 32 equal bytes.
fn part(byte: u8) -> MasterKeyPart {
    MasterKeyPart::from_slice(&[byte; 32]).unwrap()
}

/// The VP of the XOR of `parts`, computed here byte by byte.
fn xor_vp(parts: &[&MasterKeyPart]) -> Vp {
    let mut key = [0u8; 32];
    for p in parts {
        for (k, b) in key.iter_mut().zip(p.expose_secret()) {
            *k ^= b;
        }
    }
    MasterKey::from_slice(&key).unwrap().vp()
}

fn plan<'c>(
    w: &'c World,
    units: Vec<&'c KnownUnit>,
    parts: &[&MasterKeyPart],
    keys: Vec<AdminInfo>,
) -> Result<LoadPlan<'c>, CeremonyError> {
    MkLoad {
        units,
        parts: parts.iter().map(|p| p.vp()).collect(),
        keys,
    }
    .plan(&w.client)
}

fn problems<T>(r: Result<T, CeremonyError>) -> Vec<Problem> {
    match r {
        Err(CeremonyError::Problems(p)) => p,
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("not refused"),
    }
}

/// Loads `parts` into `units`, signed by alice; returns the VP the load reports.
fn load(w: &World, units: Vec<&KnownUnit>, parts: &[&MasterKeyPart]) -> Vp {
    plan(w, units, parts, vec![info(&w.alice)])
        .unwrap()
        .with_parts(parts.iter().map(|p| (*p).clone()).collect())
        .unwrap()
        .execute(&[&w.alice as &dyn Signer])
        .unwrap()
        .vp
}

/// Runs a register command on `units`, signed by `signers` (all of them may sign).
fn register(w: &World, action: RegisterAction, units: &[&KnownUnit], signers: &[&FileSigner]) {
    MkRegister {
        action,
        units: units.to_vec(),
        keys: signers.iter().map(|s| info(s)).collect(),
    }
    .plan(&w.client)
    .unwrap()
    .execute(
        &signers
            .iter()
            .map(|s| *s as &dyn Signer)
            .collect::<Vec<_>>(),
    )
    .unwrap();
}

/// Commits and activates the new registers of `units` (thresholds 2/1: alice and bob).
fn commit_and_activate(w: &World, units: &[&KnownUnit]) {
    for action in [RegisterAction::Commit, RegisterAction::SetImmediate] {
        register(w, action, units, &[&w.alice, &w.bob]);
    }
}

/// The state of `units`, in order.
fn statuses(w: &World, units: &[&KnownUnit]) -> Vec<UnitStatus> {
    units.iter().map(|u| w.client.query(u).unwrap()).collect()
}

#[test]
fn parts_load_every_unit_signed_once_per_command_and_nothing_else_changes() {
    let w = World::initialized();
    let units = operational(&w);
    let before = statuses(&w, &units);
    let (a, b) = (MasterKeyPart::random(), MasterKeyPart::random());
    // carol is preferred but installed nowhere: bob signs both commands on each unit.
    let keys = vec![info(&w.carol), info(&w.bob), info(&w.alice)];
    let first = plan(&w, units.clone(), &[&a, &b], keys).unwrap();
    assert_eq!(first.keys_needed(), vec![&info(&w.bob)]);
    assert_eq!(first.parts(), [a.vp(), b.vp()]);
    for u in first.units() {
        assert_eq!(u.signers, vec![info(&w.bob)]);
    }
    let ready = first.with_parts(vec![a.clone(), b.clone()]).unwrap();
    // The plan holds the parts until it runs; what it shows of itself never has them.
    let shown = format!("{:?}", ready.plan().units());
    for p in [&a, &b] {
        let hex: String = p
            .expose_secret()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let listed = format!("{:?}", &p.expose_secret()[..8]);
        assert!(!shown.contains(&hex[..16]), "{shown}");
        assert!(!shown.contains(listed.trim_end_matches(']')), "{shown}");
    }
    assert!(shown.contains("FromPrevious(ImportMkParts)"), "{shown}");
    // The combination's VP, computed here by the test: the ceremony never computes it.
    let vp = xor_vp(&[&a, &b]);
    for u in ready.plan().units() {
        let ids: Vec<_> = u.commands.iter().map(|c| c.command.id()).collect();
        assert_eq!(
            ids,
            [
                tke_proto::CommandId::GenerateImporter,
                tke_proto::CommandId::ImportMkParts
            ]
        );
        assert_eq!(u.signed_by(), vec![&info(&w.bob)]);
    }
    // Only bob's key is needed: the others are not even given.
    let report = ready.execute(&[&w.bob as &dyn Signer]).unwrap();
    assert_eq!(report.units, [1, 2]);
    assert_eq!(report.vp, vp);
    for (b, s) in before.iter().zip(statuses(&w, &units)) {
        assert_eq!(
            s.new_register,
            RegisterStatus {
                state: RegisterState::FullUncommitted,
                vp: Some(vp)
            }
        );
        assert!(!s.importer_pending);
        assert_eq!(s.counter, b.counter + 2, "two commands, counted");
        // Everything else is as it was.
        let mut expected = b.clone();
        expected.new_register = s.new_register;
        expected.counter = s.counter;
        assert_eq!(s, expected);
    }
}

#[test]
fn every_first_stage_problem_is_reported_at_once_and_nothing_is_sent() {
    // In imprint mode, with a recovery unit selected and no parts at all.
    let w = World::new();
    let all: Vec<&KnownUnit> = w.client.units().iter().collect();
    let before = w.statuses();
    let p = problems(plan(&w, all.clone(), &[], vec![info(&w.alice)]));
    assert!(matches!(p[0], Problem::PartCount { count: 0 }), "{p:?}");
    let rules: Vec<(usize, &Rule)> = p[1..]
        .iter()
        .map(|p| match p {
            Problem::Precondition { num, rule, .. } => (*num, rule),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        rules,
        [
            (1, &Rule::ImprintMode),
            (2, &Rule::ImprintMode),
            (3, &Rule::RecoveryUnitLoad),
            (4, &Rule::RecoveryUnitLoad)
        ]
    );
    assert!(
        matches!(
            problems(plan(&w, vec![], &[&part(1), &part(2)], vec![]))[..],
            [Problem::NoUnits]
        ),
        "no unit"
    );
    assert_eq!(w.statuses(), before);

    // Initialized: one part, four parts, the same part twice, a key installed nowhere.
    let w = World::initialized();
    let units = operational(&w);
    let before = w.statuses();
    let alice = || vec![info(&w.alice)];
    assert!(matches!(
        problems(plan(&w, units.clone(), &[&part(1)], alice()))[..],
        [Problem::PartCount { count: 1 }]
    ));
    let four = [&part(1), &part(2), &part(4), &part(8)];
    assert!(matches!(
        problems(plan(&w, units.clone(), &four, alice()))[..],
        [Problem::PartCount { count: 4 }]
    ));
    let (a, b) = (part(1), part(2));
    let p = problems(plan(&w, units.clone(), &[&a, &b, &a], alice()));
    assert!(
        matches!(&p[..], [Problem::SameParts { first: 1, second: 3, vp }] if *vp == a.vp()),
        "{p:?}"
    );
    let p = problems(plan(&w, units.clone(), &[&a, &b], vec![info(&w.carol)]));
    assert_eq!(p.len(), 2);
    assert!(p.iter().all(|p| matches!(
        p,
        Problem::TooFewSigners {
            needed: 1,
            quorum: Quorum::One,
            ..
        }
    )));
    let message = p[0].to_string();
    assert!(
        message.contains("loading master key parts") && message.contains("alice, bob"),
        "{message}"
    );
    assert_eq!(w.statuses(), before, "nothing was sent");

    // A new register that is not Empty (unit 2's), after a load into it.
    load(&w, vec![units[1]], &[&a, &b]);
    let before = w.statuses();
    let p = problems(plan(&w, units.clone(), &[&part(3), &part(5)], alice()));
    assert!(
        matches!(
            &p[..],
            [Problem::Precondition {
                num: 2,
                rule: Rule::NewRegister {
                    found: RegisterState::FullUncommitted,
                    ..
                },
                ..
            }]
        ),
        "{p:?}"
    );
    assert_eq!(w.statuses(), before);
}

#[test]
fn the_parts_values_are_checked_before_anything_is_sent() {
    let w = World::initialized();
    let units = operational(&w);
    let before = w.statuses();
    // Three parts of which the third is the XOR of the others: their key is zero. The
    // verification patterns differ, so only their values tell.
    let (a, b, c) = (part(0x0f), part(0xf0), part(0xff));
    let first = plan(&w, units.clone(), &[&a, &b, &c], vec![info(&w.alice)]).unwrap();
    assert!(matches!(
        problems(first.with_parts(vec![a.clone(), b.clone(), c]))[..],
        [Problem::PartsNotIndependent]
    ));
    // Other parts than those planned.
    let first = plan(&w, units.clone(), &[&a, &b], vec![info(&w.alice)]).unwrap();
    let p = problems(first.with_parts(vec![b.clone(), a.clone()]));
    assert!(
        matches!(&p[..], [Problem::PartsNotPlanned { planned, given }]
            if *planned == [a.vp(), b.vp()] && *given == [b.vp(), a.vp()]),
        "{p:?}"
    );
    assert_eq!(w.statuses(), before, "nothing was sent");
}

#[test]
fn the_same_parts_cannot_reload_the_current_key_but_recover_a_cleared_unit() {
    let w = World::initialized();
    let units = operational(&w);
    let (a, b, c) = (
        MasterKeyPart::random(),
        MasterKeyPart::random(),
        MasterKeyPart::random(),
    );
    let vp = load(&w, units.clone(), &[&a, &b, &c]);
    assert_eq!(vp, xor_vp(&[&a, &b, &c]));
    commit_and_activate(&w, &units);
    let before = w.statuses();
    for s in &before[..2] {
        assert_eq!(s.current_register.vp, Some(vp));
    }

    // The same parts rebuild the current key: only the units know it, and each refuses
    // (102/1) with its registers unchanged — the importer key is used up and the counter
    // moved, nothing else. In another order too (XOR does not care).
    for order in [[&a, &b, &c], [&c, &a, &b]] {
        let before = w.statuses();
        let ready = plan(&w, units.clone(), &order, vec![info(&w.alice)])
            .unwrap()
            .with_parts(order.iter().map(|p| (*p).clone()).collect())
            .unwrap();
        let err = ready.execute(&[&w.alice as &dyn Signer]).err().unwrap();
        let CeremonyError::Step { failures, .. } = &err else {
            panic!("{err}")
        };
        let nums: Vec<usize> = failures
            .iter()
            .map(|(num, e)| match e {
                ClientError::Module { error, .. } if *error == ModuleError::SAME_VALUE => *num,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(nums, [1, 2]);
        for (b, a) in before.iter().zip(w.statuses()) {
            assert_eq!(a.new_register, b.new_register);
            assert_eq!(a.current_register, b.current_register);
            assert_eq!(a.admins, b.admins);
            assert!(!a.importer_pending);
        }
    }

    // Reusing two of the parts with one new part is a new key: allowed.
    let d = MasterKeyPart::random();
    let rotated = load(&w, vec![units[0]], &[&a, &b, &d]);
    assert_ne!(rotated, vp);
    register(&w, RegisterAction::ClearNew, &units[..1], &[&w.alice]);

    // Unit 1 loses its current key; the same parts bring it back (as after a unit is
    // replaced), and it holds the key of unit 2 again.
    register(&w, RegisterAction::ClearCurrent, &units[..1], &[&w.alice]);
    assert_eq!(load(&w, vec![units[0]], &[&a, &b, &c]), vp);
    commit_and_activate(&w, &units[..1]);
    let after = statuses(&w, &units);
    assert_eq!(after[0].current_register, after[1].current_register);
    assert_eq!(after[0].current_register.vp, Some(vp));
    assert_eq!(after[0].new_register, RegisterStatus::EMPTY);
}
