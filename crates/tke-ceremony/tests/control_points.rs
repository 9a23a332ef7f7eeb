//! The control point ceremony on the shared plan, on an embedded fleet driven through the
//! library alone: set, reset, a unit already as wanted, imprint mode, too few signers,
//! the post-condition, and someone else changing a control point after the plan.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{imprint_mode, info, World};
use tke_ceremony::{
    plan::Planner, CeremonyError, ControlPointChange, Deviation, Expected, Plan, PlannedCommand,
    Problem, Quorum, UnitPlan,
};
use tke_client::KnownUnit;
use tke_proto::{Command, ControlPoint, ControlPoints, UnitStatus};
use tke_sigkey::Signer;
use tke_sigkey_file::FileSigner;

fn units(w: &World) -> Vec<&KnownUnit> {
    w.client.units().iter().collect()
}

fn mask(points: &[ControlPoint]) -> ControlPoints {
    ControlPoints::of(points)
}

/// Plans setting `set` and resetting `reset` on `on`, with `keys` that may sign.
fn plan<'c>(
    w: &'c World,
    on: Vec<&'c KnownUnit>,
    (set, reset): (ControlPoints, ControlPoints),
    keys: &[&FileSigner],
) -> Result<Plan<'c>, CeremonyError> {
    ControlPointChange {
        units: on,
        set,
        reset,
        keys: keys.iter().map(|k| info(k)).collect(),
    }
    .plan(&w.client)
}

fn problems(r: Result<Plan<'_>, CeremonyError>) -> Vec<Problem> {
    match r.err() {
        Some(CeremonyError::Problems(p)) => p,
        other => panic!("{:?}", other.map(|e| e.to_string())),
    }
}

/// What a unit in state `s` holds, but for the control points, which are `cp`.
fn with_points(s: &UnitStatus, cp: ControlPoints) -> Expected {
    Expected {
        control_points: Some(cp),
        ..Expected::of(s)
    }
}

#[test]
fn reset_then_set_changes_exactly_the_mask_signed_by_the_signature_threshold() {
    let w = World::initialized();
    let before = w.statuses();
    assert!(before
        .iter()
        .all(|s| s.control_points == ControlPoints::DEFAULT));
    let btc = mask(&[ControlPoint::BTC]);
    let without_btc = mask(&[ControlPoint::ALG_EC_25519, ControlPoint::ECDSA_OTHER]);

    // carol is preferred but installed nowhere: bob and alice sign (threshold 2).
    let reset = plan(
        &w,
        units(&w),
        (ControlPoints::NONE, btc),
        &[&w.carol, &w.bob, &w.alice],
    )
    .unwrap();
    for u in reset.units() {
        assert_eq!(u.commands.len(), 1);
        assert_eq!(u.commands[0].command, Command::RemoveControlPoints(btc));
        assert_eq!(u.signed_by(), vec![&info(&w.bob), &info(&w.alice)]);
        assert_eq!(u.expected, with_points(&u.status, without_btc));
    }
    let report = reset.execute(&[&w.alice as &dyn Signer, &w.bob]).unwrap();
    // Each unit answers its whole mask afterwards.
    for (_, outputs) in &report.outputs {
        assert_eq!(outputs, &vec![without_btc.as_bytes().to_vec()]);
    }
    let after = w.statuses();
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.counter, b.counter + 1, "one command per unit");
        assert_eq!(
            Expected::of(a),
            with_points(b, without_btc),
            "only the mask changed"
        );
    }

    let set = plan(
        &w,
        units(&w),
        (btc, ControlPoints::NONE),
        &[&w.alice, &w.bob],
    )
    .unwrap();
    for u in set.units() {
        assert_eq!(u.commands[0].command, Command::AddControlPoints(btc));
    }
    set.execute(&[&w.alice as &dyn Signer, &w.bob]).unwrap();
    for (b, a) in before.iter().zip(w.statuses()) {
        assert_eq!(a.counter, b.counter + 2);
        assert_eq!(Expected::of(&a), Expected::of(b), "back as it was");
    }
}

#[test]
fn a_unit_that_holds_the_wanted_value_gets_no_command_and_needs_no_signature() {
    let w = World::initialized();
    let all = units(&w);
    let btc = mask(&[ControlPoint::BTC]);
    // Every unit has XCP_CPB_BTC set already: nothing to send, no key needed.
    let before = w.statuses();
    let noop = plan(&w, all.clone(), (btc, ControlPoints::NONE), &[]).unwrap();
    assert!(noop.units().iter().all(|u| u.commands.is_empty()));
    assert!(noop.keys_needed().is_empty());
    noop.execute(&[]).unwrap();
    assert_eq!(w.statuses(), before, "nothing was sent");

    // Unit 1 alone loses it; setting it on all sends one command, to unit 1 only, and
    // alice alone (too few for a command) blocks only the unit that needs one.
    plan(
        &w,
        vec![all[0]],
        (ControlPoints::NONE, btc),
        &[&w.alice, &w.bob],
    )
    .unwrap()
    .execute(&[&w.alice as &dyn Signer, &w.bob])
    .unwrap();
    let p = problems(plan(
        &w,
        all.clone(),
        (btc, ControlPoints::NONE),
        &[&w.alice],
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        matches!(&p[0], Problem::TooFewSigners { num: 1, .. }),
        "{p:?}"
    );

    let before = w.statuses();
    let set = plan(&w, all, (btc, ControlPoints::NONE), &[&w.alice, &w.bob]).unwrap();
    let sent: Vec<usize> = set
        .units()
        .iter()
        .filter(|u| !u.commands.is_empty())
        .map(|u| u.unit.num)
        .collect();
    assert_eq!(sent, [1]);
    set.execute(&[&w.alice as &dyn Signer, &w.bob]).unwrap();
    let after = w.statuses();
    assert_eq!(after[0].counter, before[0].counter + 1);
    for (b, a) in before.iter().zip(&after).skip(1) {
        assert_eq!(a, b, "units that held it were not sent anything");
    }
    assert!(after
        .iter()
        .all(|s| s.control_points == ControlPoints::DEFAULT));
}

#[test]
fn several_points_set_and_reset_at_once_send_only_what_changes() {
    let w = World::initialized();
    let (first, last) = (
        ControlPoint::new(0).unwrap(),
        ControlPoint::new(127).unwrap(),
    );
    let set = mask(&[first, last, ControlPoint::BTC]);
    let reset = mask(&[ControlPoint::ALG_EC_25519, ControlPoint::new(5).unwrap()]);
    let p = plan(&w, units(&w), (set, reset), &[&w.alice, &w.bob]).unwrap();
    let wanted = mask(&[first, ControlPoint::BTC, ControlPoint::ECDSA_OTHER, last]);
    for u in p.units() {
        // BTC is set already and 5 is not: neither is sent.
        // `ToSend` compares with the `Command` it holds.
        assert_eq!(u.commands.len(), 2);
        assert!(u.commands[0].command == Command::AddControlPoints(mask(&[first, last])));
        assert!(
            u.commands[1].command
                == Command::RemoveControlPoints(mask(&[ControlPoint::ALG_EC_25519]))
        );
        assert_eq!(u.expected.control_points, Some(wanted));
    }
    p.execute(&[&w.alice as &dyn Signer, &w.bob]).unwrap();
    assert!(w.statuses().iter().all(|s| s.control_points == wanted));

    // A point both to set and to reset is refused, whatever the units hold.
    let before = w.statuses();
    let p = problems(plan(
        &w,
        units(&w),
        (
            mask(&[ControlPoint::BTC, first]),
            mask(&[first, ControlPoint::BTC, ControlPoint::ECDSA_OTHER]),
        ),
        &[&w.alice, &w.bob],
    ));
    assert!(
        matches!(&p[..], [Problem::ControlPointsSetAndReset { points }] if *points == [first, ControlPoint::BTC]),
        "{p:?}"
    );
    assert_eq!(w.statuses(), before);
}

#[test]
fn imprint_mode_and_too_few_signers_are_refused_on_every_unit_before_anything_is_sent() {
    let w = World::new();
    let before = w.statuses();
    let btc = mask(&[ControlPoint::BTC]);
    // In imprint mode even a unit that holds the wanted value already is refused.
    for change in [(ControlPoints::NONE, btc), (btc, ControlPoints::NONE)] {
        let p = problems(plan(&w, units(&w), change, &[&w.alice]));
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p.iter().all(imprint_mode), "{p:?}");
    }
    assert_eq!(w.statuses(), before);

    let w = World::initialized();
    let before = w.statuses();
    // The signature threshold is 2: alice alone, or carol (installed nowhere), is too few.
    let p = problems(plan(
        &w,
        units(&w),
        (ControlPoints::NONE, btc),
        &[&w.alice, &w.carol],
    ));
    assert_eq!(p.len(), 4);
    assert!(p.iter().all(|p| matches!(
        p,
        Problem::TooFewSigners {
            needed: 2,
            quorum: Quorum::SignatureThreshold,
            action: "changing control points",
            usable,
            ..
        } if usable.len() == 1
    )));
    assert_eq!(w.statuses(), before, "nothing was sent");
    assert!(matches!(
        &problems(plan(&w, vec![], (btc, ControlPoints::NONE), &[]))[..],
        [Problem::NoUnits]
    ));
}

#[test]
fn a_mask_other_than_planned_fails_the_post_condition() {
    let w = World::initialized();
    let btc = mask(&[ControlPoint::BTC]);
    // A plan that sends addControlPoints(BTC) but expects the default mask without it.
    let mut planner = Planner::start(
        &w.client,
        "Testing",
        units(&w),
        vec![info(&w.alice), info(&w.bob)],
    );
    for (unit, status) in planner.reachable() {
        let signers = planner.signers(
            unit,
            &status,
            &status.admins,
            Quorum::SignatureThreshold,
            "testing",
        );
        planner.unit(UnitPlan {
            unit,
            expected: with_points(&status, ControlPoints::DEFAULT.difference(btc)),
            status,
            commands: vec![PlannedCommand {
                command: Command::AddControlPoints(btc).into(),
                signers,
            }],
        });
    }
    let err = planner
        .finish()
        .unwrap()
        .execute(&[&w.alice as &dyn Signer, &w.bob])
        .unwrap_err();
    let CeremonyError::PostCondition { units, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(units.len(), 4);
    assert_eq!(
        units[0].deviations,
        [Deviation::ControlPoints {
            expected: ControlPoints::DEFAULT.difference(btc),
            found: ControlPoints::DEFAULT,
        }]
    );
    assert!(
        err.to_string().contains(
            "control points set: XCP_CPB_ALG_EC_25519, XCP_CPB_BTC, XCP_CPB_ECDSA_OTHER, expected XCP_CPB_ALG_EC_25519, XCP_CPB_ECDSA_OTHER"
        ),
        "{err}"
    );
}

#[test]
fn a_control_point_changed_by_someone_else_after_the_plan_is_interference() {
    let w = World::initialized();
    let btc = mask(&[ControlPoint::BTC]);
    let p = plan(
        &w,
        units(&w),
        (ControlPoints::NONE, btc),
        &[&w.alice, &w.bob],
    )
    .unwrap();
    // Someone sets point 9 on unit 2 between the plan and its execution.
    let nine = mask(&[ControlPoint::new(9).unwrap()]);
    let unit2 = &w.client.units()[1];
    w.client
        .run(
            unit2,
            &Command::AddControlPoints(nine),
            &[&w.alice as &dyn Signer, &w.bob],
        )
        .unwrap();
    let err = p.execute(&[&w.alice as &dyn Signer, &w.bob]).unwrap_err();
    let CeremonyError::Interference { units, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(units.len(), 1);
    assert_eq!(units[0].num, 2);
    assert!(
        units[0].deviations.iter().any(|d| matches!(
            d,
            Deviation::ControlPoints { found, .. } if *found == ControlPoints::DEFAULT.union(nine)
        )),
        "{err}"
    );
}
