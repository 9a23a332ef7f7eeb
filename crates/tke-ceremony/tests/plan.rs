//! The shared plan: signers chosen per unit, every problem before the first command,
//! commands at accounted counters, the full post-condition after.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{info, World};
use tke_ceremony::{
    plan::Planner, CeremonyError, Deviation, Expected, PlannedCommand, Problem, Quorum, UnitPlan,
};
use tke_client::KnownUnit;
use tke_proto::{AdminInfo, Command, RegisterStatus, UnitStatus};
use tke_sigkey::Signer;

/// Plans, on every unit, one command needing `quorum`, leaving the unit as `after` says.
fn plan_all<'c>(
    w: &'c World,
    keys: Vec<AdminInfo>,
    quorum: Quorum,
    command: Command,
    after: impl Fn(&UnitStatus) -> Expected,
) -> Result<tke_ceremony::Plan<'c>, CeremonyError> {
    let units: Vec<&KnownUnit> = w.client.units().iter().collect();
    let mut planner = Planner::start(&w.client, "Testing", units, keys);
    for (unit, status) in planner.reachable() {
        let signers = planner.signers(unit, &status, &status.admins, quorum, "testing");
        planner.unit(UnitPlan {
            unit,
            expected: after(&status),
            status,
            commands: vec![PlannedCommand {
                command: command.clone().into(),
                signers,
            }],
        });
    }
    planner.finish()
}

#[test]
fn a_plan_picks_installed_signers_in_preference_order_and_checks_the_result() {
    let w = World::initialized();
    // carol is preferred but installed nowhere: alice and bob sign.
    let keys = vec![info(&w.carol), info(&w.bob), info(&w.alice)];
    let plan = plan_all(
        &w,
        keys,
        Quorum::SignatureThreshold,
        Command::ClearNew,
        Expected::of,
    )
    .unwrap();
    let needed: Vec<_> = plan.keys_needed().into_iter().cloned().collect();
    assert_eq!(needed, vec![info(&w.bob), info(&w.alice)]);
    for u in plan.units() {
        assert_eq!(u.signed_by(), vec![&info(&w.bob), &info(&w.alice)]);
    }
    let before = w.statuses();
    let report = plan
        .execute(&[&w.alice as &dyn Signer, &w.bob, &w.carol])
        .unwrap();
    assert_eq!(report.outputs.len(), 4);
    for (b, a) in before.iter().zip(w.statuses()) {
        assert_eq!(a.counter, b.counter + 1, "one command per unit");
        assert_eq!(a.current_register, b.current_register);
    }
}

#[test]
fn too_few_installed_keys_is_a_problem_for_each_unit_before_anything_is_sent() {
    let w = World::initialized();
    let before = w.statuses();
    let err = plan_all(
        &w,
        vec![info(&w.alice), info(&w.carol)],
        Quorum::SignatureThreshold,
        Command::ClearNew,
        Expected::of,
    )
    .err()
    .unwrap();
    let CeremonyError::Problems(problems) = &err else {
        panic!("{err}")
    };
    assert_eq!(problems.len(), 4, "{err}");
    assert!(
        matches!(&problems[0], Problem::TooFewSigners { needed: 2, usable, .. } if usable.len() == 1),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("needs the signatures of 2 of its administrators (its signature threshold), and 1 of the signature keys that may sign is installed on it: alice (installed administrators: alice, bob)"), "{text}");
    assert_eq!(w.statuses(), before, "nothing was sent");
}

#[test]
fn a_missing_signer_changes_nothing() {
    let w = World::initialized();
    let keys = vec![info(&w.alice), info(&w.bob)];
    let plan = plan_all(&w, keys, Quorum::One, Command::ClearNew, Expected::of).unwrap();
    let before = w.statuses();
    let err = plan.execute(&[&w.bob as &dyn Signer]).err().unwrap();
    assert!(
        matches!(&err, CeremonyError::SignerMissing { name, .. } if name.as_str() == "alice"),
        "{err}"
    );
    assert_eq!(w.statuses(), before);
}

#[test]
fn a_result_other_than_planned_is_a_post_condition_failure() {
    let w = World::initialized();
    let keys = vec![info(&w.alice)];
    // The plan claims clearing the new register empties the current one: it does not.
    let plan = plan_all(&w, keys, Quorum::One, Command::ClearNew, |s| Expected {
        current_register: RegisterStatus::EMPTY,
        ..Expected::of(s)
    })
    .unwrap();
    let err = plan.execute(&[&w.alice as &dyn Signer]).err().unwrap();
    let CeremonyError::PostCondition { units, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(units.len(), 4);
    assert!(matches!(
        units[0].deviations[..],
        [Deviation::CurrentRegister { .. }]
    ));
}

#[test]
fn a_command_from_someone_else_after_the_plan_is_interference() {
    let w = World::initialized();
    let keys = vec![info(&w.alice)];
    let plan = plan_all(&w, keys, Quorum::One, Command::ClearNew, Expected::of).unwrap();
    // Bob uses unit 1 between the plan and its execution.
    let unit1 = &w.client.units()[0];
    w.client
        .run(unit1, &Command::ClearNew, &[&w.bob as &dyn Signer])
        .unwrap();
    let err = plan.execute(&[&w.alice as &dyn Signer]).err().unwrap();
    let CeremonyError::Interference { units, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(units.len(), 1);
    assert_eq!(units[0].num, 1);
}
