//! The master key register commands on the shared plan, and the guards of the
//! destructive ceremonies, on an embedded fleet driven through the library alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{imprint_mode, info, World};
use tke_ceremony::{
    guard::{Destruction, Guard},
    CeremonyError, MkRegister, Problem, Quorum, RegisterAction, Rule, Zeroize,
};
use tke_client::KnownUnit;
use tke_proto::{BoxError, RegisterState, UnitStatus, UnitType};
use tke_sigkey::Signer;
use tke_test_support::mk::load_new_register;

fn units(w: &World) -> Vec<&KnownUnit> {
    w.client.units().iter().collect()
}

fn plan<'c>(
    w: &'c World,
    action: RegisterAction,
    keys: &[&tke_sigkey_file::FileSigner],
) -> Result<tke_ceremony::Plan<'c>, CeremonyError> {
    MkRegister {
        action,
        units: units(w),
        keys: keys.iter().map(|k| info(k)).collect(),
    }
    .plan(&w.client)
}

fn problems(r: Result<tke_ceremony::Plan<'_>, CeremonyError>) -> Vec<Problem> {
    match r.err() {
        Some(CeremonyError::Problems(p)) => p,
        other => panic!("{:?}", other.map(|e| e.to_string())),
    }
}

/// Loads one random value into every new register (generated in recovery unit 3).
fn load_all(w: &World) -> tke_proto::Vp {
    let u = units(w);
    let signers = [&w.alice as &dyn Signer, &w.bob];
    load_new_register(&w.client, u[2], &[u[0], u[1], u[3]], &signers)
}

#[test]
fn every_register_command_is_refused_in_imprint_mode_and_in_the_wrong_state() {
    let w = World::new();
    let before = w.statuses();
    for action in [
        RegisterAction::Commit,
        RegisterAction::SetImmediate,
        RegisterAction::ClearNew,
        RegisterAction::ClearCurrent,
    ] {
        let p = problems(plan(&w, action, &[&w.alice]));
        assert_eq!(p.len(), 4, "{action:?}: {p:?}");
        assert!(p.iter().all(imprint_mode), "{p:?}");
    }
    assert_eq!(w.statuses(), before);

    // Initialized: current Valid, new Empty.
    let w = World::initialized();
    let before = w.statuses();
    for action in [
        RegisterAction::Commit,
        RegisterAction::SetImmediate,
        RegisterAction::ClearNew,
    ] {
        let p = problems(plan(&w, action, &[&w.alice, &w.bob]));
        assert_eq!(p.len(), 4, "{action:?}");
        assert!(
            p.iter().all(|p| matches!(
                p,
                Problem::Precondition {
                    rule: Rule::NewRegister {
                        found: RegisterState::Empty,
                        ..
                    },
                    ..
                }
            )),
            "{action:?}: {p:?}"
        );
    }
    assert_eq!(w.statuses(), before);
}

#[test]
fn commit_needs_one_value_and_the_signature_threshold_then_setimm_promotes_it() {
    let w = World::initialized();
    let vp = load_all(&w);
    let before = w.statuses();
    // alice alone is one signature of the two the threshold asks, on every unit.
    let p = problems(plan(&w, RegisterAction::Commit, &[&w.alice]));
    assert_eq!(p.len(), 4);
    assert!(p.iter().all(|p| matches!(
        p,
        Problem::TooFewSigners {
            needed: 2,
            quorum: Quorum::SignatureThreshold,
            ..
        }
    )));
    assert_eq!(w.statuses(), before, "nothing was sent");

    let commit = plan(&w, RegisterAction::Commit, &[&w.alice, &w.bob]).unwrap();
    for u in commit.units() {
        assert_eq!(
            u.commands[0].command,
            tke_proto::Command::CommitMk(vp),
            "the command carries the common value"
        );
    }
    commit.execute(&[&w.alice as &dyn Signer, &w.bob]).unwrap();
    for s in w.statuses() {
        assert_eq!(s.new_register.state, RegisterState::FullCommitted);
        assert_eq!(s.new_register.vp, Some(vp));
    }

    // Set immediate: one signature, the first key installed.
    let setimm = plan(
        &w,
        RegisterAction::SetImmediate,
        &[&w.carol, &w.bob, &w.alice],
    )
    .unwrap();
    let needed: Vec<_> = setimm.keys_needed().into_iter().cloned().collect();
    assert_eq!(needed, vec![info(&w.bob)]);
    setimm.execute(&[&w.bob as &dyn Signer]).unwrap();
    for s in w.statuses() {
        assert_eq!(s.new_register.state, RegisterState::Empty);
        assert_eq!(s.current_register.state, RegisterState::Valid);
        assert_eq!(s.current_register.vp, Some(vp));
    }
}

#[test]
fn commit_refuses_units_that_hold_different_values_naming_each() {
    let w = World::initialized();
    let u = units(&w);
    let signers = [&w.alice as &dyn Signer, &w.bob];
    // Units 1 and 3 hold one value, 2 and 4 another.
    load_new_register(&w.client, u[2], &[u[0]], &signers);
    load_new_register(&w.client, u[3], &[u[1]], &signers);
    let before = w.statuses();
    let p = problems(plan(&w, RegisterAction::Commit, &[&w.alice, &w.bob]));
    let nums: Vec<usize> = p
        .iter()
        .map(|p| match p {
            Problem::Precondition {
                num,
                rule: Rule::NewRegisterValues { values: 2, .. },
                ..
            } => *num,
            other => panic!("{other}"),
        })
        .collect();
    assert_eq!(nums, [1, 2, 3, 4]);
    assert_eq!(w.statuses(), before);
}

#[test]
fn clearing_registers_takes_one_signature_but_a_recovery_units_current_takes_the_quorum() {
    let w = World::initialized();
    load_all(&w);
    plan(&w, RegisterAction::ClearNew, &[&w.alice])
        .unwrap()
        .execute(&[&w.alice as &dyn Signer])
        .unwrap();
    assert!(w
        .statuses()
        .iter()
        .all(|s| s.new_register.state == RegisterState::Empty));

    let before = w.statuses();
    let p = problems(plan(&w, RegisterAction::ClearCurrent, &[&w.alice]));
    let nums: Vec<usize> = p
        .iter()
        .map(|p| match p {
            Problem::TooFewSigners { num, needed: 2, .. } => *num,
            other => panic!("{other}"),
        })
        .collect();
    assert_eq!(nums, [3, 4], "the recovery units");
    assert_eq!(w.statuses(), before);

    let clear = plan(&w, RegisterAction::ClearCurrent, &[&w.alice, &w.bob]).unwrap();
    let signed: Vec<usize> = clear.units().iter().map(|u| u.signed_by().len()).collect();
    assert_eq!(signed, [1, 1, 2, 2]);
    clear.execute(&[&w.alice as &dyn Signer, &w.bob]).unwrap();
    assert!(w
        .statuses()
        .iter()
        .all(|s| s.current_register.state == RegisterState::Empty));
    let p = problems(plan(&w, RegisterAction::ClearCurrent, &[&w.alice, &w.bob]));
    assert!(matches!(
        p[0],
        Problem::Precondition {
            rule: Rule::CurrentRegister {
                found: RegisterState::Empty,
                ..
            },
            ..
        }
    ));
}

/// Refuses to destroy the current master key of operational units (a stand-in for the
/// key-storage check, which knows where keys are stored).
struct KeepOperationalKeys;

impl Guard for KeepOperationalKeys {
    fn name(&self) -> &'static str {
        "key storage"
    }
    fn check(&self, _: &KnownUnit, status: &UnitStatus, _: Destruction) -> Result<(), BoxError> {
        if status.unit_type == UnitType::Operational
            && status.current_register.state == RegisterState::Valid
        {
            return Err("its key storage holds 3 keys under the current master key".into());
        }
        Ok(())
    }
}

#[test]
fn a_guard_refuses_zeroize_and_clear_current_before_anything_changes() {
    let w = World::initialized();
    let before = w.statuses();
    let keys = vec![info(&w.alice), info(&w.bob)];
    let err = Zeroize {
        units: units(&w),
        keys: keys.clone(),
    }
    .plan_guarded(&w.client, &KeepOperationalKeys)
    .err()
    .unwrap();
    let text = err.to_string();
    let CeremonyError::Problems(p) = err else {
        panic!("{text}")
    };
    let nums: Vec<usize> = p
        .iter()
        .map(|p| match p {
            Problem::Guarded {
                num,
                what: Destruction::Zeroize,
                guard: "key storage",
                ..
            } => *num,
            other => panic!("{other}"),
        })
        .collect();
    assert_eq!(nums, [1, 2]);
    assert!(
        text.contains("crypto unit 1 (")
            && text.contains("zeroizing it is refused by the key storage check: its key storage holds 3 keys under the current master key"),
        "{text}"
    );

    let p = problems(
        MkRegister {
            action: RegisterAction::ClearCurrent,
            units: units(&w),
            keys,
        }
        .plan_guarded(&w.client, &KeepOperationalKeys),
    );
    assert!(
        matches!(
            &p[..],
            [
                Problem::Guarded {
                    num: 1,
                    what: Destruction::ClearCurrent,
                    ..
                },
                Problem::Guarded { num: 2, .. }
            ]
        ),
        "{p:?}"
    );
    assert_eq!(w.statuses(), before, "nothing was sent");
}
