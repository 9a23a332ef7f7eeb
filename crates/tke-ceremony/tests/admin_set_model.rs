//! The administrator-set planner against a real (embedded) crypto unit: a seeded random
//! walk of administrator and threshold changes. Whatever the planner accepts, the unit
//! runs step by step, signed by the administrators the plan names, and ends exactly in
//! the planned state; whatever single change the planner refuses, the unit refuses too,
//! with the module error of the reason given, and changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeSet, sync::Arc};

use tke_ceremony::{AdminChange, AdminSet, CeremonyError, Change, Expected, Problem, Rule};
use tke_client::{Client, ClientError, EmbeddedFleet, FleetSpec, Transport};
use tke_proto::{AdminInfo, Command, ModuleError, Threshold};
use tke_sigkey::Signer;
use tke_test_support::{MemSigner, Rng};

fn info(s: &MemSigner) -> AdminInfo {
    AdminInfo {
        ski: s.ski(),
        name: s.name().clone(),
    }
}

/// The module error a unit answers for the first reason a single command is refused:
/// the signature count is checked before the command's own rules.
fn module_error(problems: &[Problem]) -> ModuleError {
    if problems
        .iter()
        .any(|p| matches!(p, Problem::TooFewSigners { .. }))
    {
        return ModuleError::NOT_ENOUGH_SIGNATURES;
    }
    let Some(Problem::Precondition { rule, .. }) = problems.first() else {
        panic!("not a unit's problem: {problems:?}");
    };
    match rule {
        Rule::AdminInstalled { .. } => ModuleError::ADMIN_EXISTS,
        Rule::AdminNotInstalled { .. } => ModuleError::ADMIN_NOT_FOUND,
        Rule::AdminsFull { .. } => ModuleError::TOO_MANY_ADMINS,
        Rule::LookalikeName { .. } => ModuleError::ADMIN_NAME_LOOKALIKE,
        Rule::RemovalBelowThreshold { .. } => ModuleError::REMOVAL_BELOW_THRESHOLD,
        Rule::ThresholdsAboveAdmins {
            signature, admins, ..
        } if usize::from(*signature) > *admins => ModuleError::SIG_THRESHOLD_ABOVE_ADMINS,
        Rule::ThresholdsAboveAdmins { .. } => ModuleError::REV_THRESHOLD_ABOVE_ADMINS,
        other => panic!("no module error for {other:?}"),
    }
}

#[test]
fn the_unit_agrees_with_every_plan() {
    let dir = tempfile::tempdir().unwrap();
    let spec = FleetSpec {
        operational: 1,
        recovery: 0,
        ..FleetSpec::default()
    };
    let fleet = EmbeddedFleet::create(dir.path(), spec).unwrap();
    let ca = fleet.ca().clone();
    let transport: Arc<dyn Transport> = Arc::new(fleet);
    let client = Client::connect(vec![(transport, ca)]).unwrap();
    let unit = &client.units()[0];

    // Ten administrators, two of whose names look the same.
    let pool: Vec<MemSigner> = [
        "a", "b", "c", "d", "e", "f", "g", "h", "i", "admin-j", "ADMIN-J",
    ]
    .iter()
    .map(|n| MemSigner::new(n))
    .collect();
    let signer = |a: &AdminInfo| -> &dyn Signer { pool.iter().find(|s| s.ski() == a.ski).unwrap() };

    let mut rng = Rng(0x5eed_a11c_e0b0_b000);
    let mut accepted = 0;
    let mut refused_single = BTreeSet::new();
    let mut orders = BTreeSet::new();
    let mut multi_refused = 0;
    for round in 0..400 {
        let status = client.query(unit).unwrap();
        let t = |rng: &mut Rng, hi| Threshold::new(rng.between(1, hi)).unwrap();
        let pick = |rng: &mut Rng| &pool[rng.below(pool.len())];
        let change = match rng.below(100) {
            0..=34 => Change::Add(pick(&mut rng).certificate().clone()),
            35..=59 => Change::Remove(info(pick(&mut rng))),
            60..=79 => Change::Thresholds {
                signature: t(&mut rng, 5),
                revocation: t(&mut rng, 5),
            },
            80..=96 => {
                let mut admins: Vec<&MemSigner> = pool.iter().collect();
                rng.shuffle(&mut admins);
                admins.truncate(rng.between(1, 6) as usize);
                let n = u32::try_from(admins.len()).unwrap();
                Change::Set(AdminSet {
                    admins: admins.iter().map(|s| s.certificate().clone()).collect(),
                    sig_threshold: t(&mut rng, n),
                    rev_threshold: t(&mut rng, n),
                })
            }
            _ => {
                // Back to imprint mode, signed by an installed administrator.
                let by: Vec<&dyn Signer> = status
                    .admins
                    .iter()
                    .take(usize::from(!status.imprint_mode()))
                    .map(signer)
                    .collect();
                client.run(unit, &Command::Zeroize, &by).unwrap();
                continue;
            }
        };
        // The keys that may sign: usually all of them, sometimes a few, in any order.
        let mut keys: Vec<AdminInfo> = pool.iter().map(info).collect();
        rng.shuffle(&mut keys);
        if rng.below(10) < 3 {
            keys.truncate(rng.below(4));
        }

        let ceremony = AdminChange {
            units: vec![unit],
            change: change.clone(),
            keys: keys.clone(),
        };
        match ceremony.plan(&client) {
            Ok(plan) => {
                let c = &plan.changes()[0];
                orders.insert(format!("{:?}", c.order));
                let expected = c.expected.clone();
                // Every key is given: the plan's signers are the ones that sign.
                let all: Vec<&dyn Signer> = pool.iter().map(|s| s as &dyn Signer).collect();
                if let Err(e) = plan.execute(&all) {
                    panic!("round {round}: the unit refused a planned change {change:?}: {e}");
                }
                let after = client.query(unit).unwrap();
                assert_eq!(expected.deviations(&after), [], "round {round}: {change:?}");
                accepted += 1;
            }
            Err(CeremonyError::Problems(problems)) => {
                let single = match &change {
                    Change::Add(c) => Some(Command::AddAdmin(c.clone())),
                    Change::Remove(a) => Some(Command::RemoveAdmin(a.ski)),
                    Change::Thresholds {
                        signature,
                        revocation,
                    } => Some(Command::SetThresholds {
                        signature: *signature,
                        revocation: *revocation,
                    }),
                    _ => None,
                };
                let Some(command) = single else {
                    // A whole-set change refused: nothing was sent.
                    multi_refused += 1;
                    assert_eq!(client.query(unit).unwrap(), status, "round {round}");
                    continue;
                };
                // Sent anyway, with every installed key that may sign: the unit refuses
                // for the reason the plan gave, and keeps its state.
                let by: Vec<&dyn Signer> = keys
                    .iter()
                    .filter(|k| status.admins.iter().any(|a| a.ski == k.ski))
                    .map(signer)
                    .collect();
                let expected = module_error(&problems);
                match client.run(unit, &command, &by) {
                    Err(ClientError::Module { error, .. }) => {
                        assert_eq!(error, expected, "round {round}: {problems:?}");
                    }
                    other => panic!(
                        "round {round}: the unit answered {other:?}, the plan said {problems:?}"
                    ),
                }
                let after = client.query(unit).unwrap();
                assert_eq!(Expected::of(&after), Expected::of(&status), "round {round}");
                refused_single.insert(format!("{expected:?}"));
            }
            Err(other) => panic!("round {round}: {other}"),
        }
    }
    // The walk reached every order and every refusal (the seed is fixed).
    assert_eq!(
        orders.into_iter().collect::<Vec<_>>(),
        ["AddFirst", "RemoveFirst", "RevocationFirst", "Single"]
    );
    assert_eq!(refused_single.len(), 8, "{refused_single:?}");
    assert!(
        accepted > 100 && multi_refused > 5,
        "{accepted} {multi_refused}"
    );
}

/// A whole-set change on every unit of the default fleet, several steps each, units in
/// parallel; the SDK's case-C edge refused on every unit with nothing sent.
#[test]
fn a_whole_set_change_on_every_unit() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = EmbeddedFleet::create(dir.path(), FleetSpec::default()).unwrap();
    let ca = fleet.ca().clone();
    let transport: Arc<dyn Transport> = Arc::new(fleet);
    let client = Client::connect(vec![(transport, ca)]).unwrap();
    let units: Vec<_> = client.units().iter().collect();
    let pool: Vec<MemSigner> = ["a", "b", "c", "d", "e", "f"]
        .iter()
        .map(|n| MemSigner::new(n))
        .collect();
    let all: Vec<&dyn Signer> = pool.iter().map(|s| s as &dyn Signer).collect();
    let keys: Vec<AdminInfo> = pool.iter().map(info).collect();
    let set = |admins: &[usize], sig: u32, rev: u32| {
        Change::Set(AdminSet {
            admins: admins
                .iter()
                .map(|&i| pool[i].certificate().clone())
                .collect(),
            sig_threshold: Threshold::new(sig).unwrap(),
            rev_threshold: Threshold::new(rev).unwrap(),
        })
    };
    let change = |c: Change, keys: &[AdminInfo]| AdminChange {
        units: units.clone(),
        change: c,
        keys: keys.to_vec(),
    };
    // From imprint mode: a..e at 1/5 (order A: additions, then leaving imprint mode).
    change(set(&[0, 1, 2, 3, 4], 1, 5), &keys)
        .plan(&client)
        .unwrap()
        .execute(&all)
        .unwrap();
    // The edge: keep a, add f, thresholds 1/2, only the target's keys may sign.
    let before: Vec<_> = units.iter().map(|u| client.query(u).unwrap()).collect();
    let edge = change(set(&[0, 5], 1, 2), &[keys[0].clone(), keys[5].clone()]);
    let Err(CeremonyError::Problems(problems)) = edge.plan(&client) else {
        panic!("the case-C edge was not refused");
    };
    assert_eq!(problems.len(), units.len(), "{problems:?}");
    assert!(problems.iter().all(|p| matches!(p,
        Problem::TooFewSigners { action, needed: 5, .. }
            if *action == "removing an administrator (order C: after the additions)")));
    let after: Vec<_> = units.iter().map(|u| client.query(u).unwrap()).collect();
    assert_eq!(before, after, "a refused change sent a command");
    // With every key the removals could be signed, but the second would leave 4
    // administrators under the revocation threshold 5: refused too, before anything.
    let Err(CeremonyError::Problems(problems)) = change(set(&[0, 5], 1, 2), &keys).plan(&client)
    else {
        panic!("order C below the revocation threshold was not refused");
    };
    assert!(problems.iter().all(|p| matches!(
        p,
        Problem::Precondition {
            rule: Rule::RemovalBelowThreshold { remaining: 4, .. },
            ..
        }
    )));
    // Lowering the revocation threshold first, as a change of its own, lets order C run on
    // every unit: add f, remove b, c, d and e.
    change(
        Change::Thresholds {
            signature: Threshold::new(1).unwrap(),
            revocation: Threshold::new(2).unwrap(),
        },
        &keys,
    )
    .plan(&client)
    .unwrap()
    .execute(&all)
    .unwrap();
    // Only the target's keys may sign: f, added first, signs the removals with a.
    let target_keys = [keys[0].clone(), keys[5].clone()];
    let plan = change(set(&[0, 5], 1, 2), &target_keys)
        .plan(&client)
        .unwrap();
    assert!(plan
        .changes()
        .iter()
        .all(|c| c.order == tke_ceremony::Order::AddFirst && c.steps.len() == 5));
    plan.execute(&all).unwrap();
    for u in &units {
        let s = client.query(u).unwrap();
        assert_eq!(s.admins, vec![info(&pool[0]), info(&pool[5])]);
        assert_eq!((s.sig_threshold, s.rev_threshold), (1, 2));
    }
}
