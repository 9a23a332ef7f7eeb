//! The administrator-set planner, without units: each order (the vendor SDK's cases A, B
//! and C), who signs each step, and every refusal a unit would make, found before the
//! first command — the SDK's case-C edge case included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tke_ceremony::{
    admin_set::{self, Action, AdminSet, Change, Order, UnitChange},
    Problem, Quorum, Rule,
};
use tke_proto::{
    ecdsa_p256::EcdsaKey, p256::PublicKey, AdminCertificate, AdminInfo, AdminName, RegisterStatus,
    Threshold, UnitId, UnitStatus, UnitType,
};

/// A certificate for a new key of administrator `name`.
fn cert(name: &str) -> AdminCertificate {
    let key = EcdsaKey::random();
    let public = PublicKey::from(key.verifying_key());
    AdminCertificate::build(
        &AdminName::new(name).unwrap(),
        &public,
        Box::new(|m: &[u8]| Ok(key.sign(m)?)),
    )
    .unwrap()
}

fn info(c: &AdminCertificate) -> AdminInfo {
    AdminInfo {
        ski: c.ski(),
        name: c.name().clone(),
    }
}

fn infos(v: &[&AdminCertificate]) -> Vec<AdminInfo> {
    v.iter().map(|c| info(c)).collect()
}

fn t(n: u32) -> Threshold {
    Threshold::new(n).unwrap()
}

/// A unit holding `admins` with thresholds `sig`/`rev` (0/0: imprint mode).
fn unit(admins: &[&AdminCertificate], sig: u8, rev: u8) -> UnitStatus {
    UnitStatus {
        unit_id: UnitId::random(),
        unit_type: UnitType::Operational,
        counter: 7,
        sig_threshold: sig,
        rev_threshold: rev,
        admins: infos(admins),
        new_register: RegisterStatus::EMPTY,
        current_register: RegisterStatus::EMPTY,
        importer_pending: false,
        control_points: tke_proto::ControlPoints::DEFAULT,
    }
}

/// Eight administrators: a to h.
fn eight() -> Vec<AdminCertificate> {
    ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .map(|n| cert(&format!("admin-{n}")))
        .collect()
}

fn names(v: &[AdminInfo]) -> Vec<&str> {
    v.iter().map(|a| a.name.as_str()).collect()
}

/// The problems of a refused single-unit plan.
fn refused(status: &UnitStatus, change: &Change, keys: &[AdminInfo]) -> Vec<Problem> {
    admin_set::plan_unit(1, status, change, keys).expect_err("the plan should be refused")
}

/// The rule of a precondition problem.
fn rule(p: &Problem) -> &Rule {
    match p {
        Problem::Precondition { num: 1, rule, .. } => rule,
        other => panic!("not a precondition of unit 1: {other:?}"),
    }
}

/// Quorum, needed, usable names and installed names of a too-few-signers problem, with
/// what it is about.
fn short(p: &Problem) -> (&'static str, Quorum, usize, Vec<&str>, Vec<&str>) {
    match p {
        Problem::TooFewSigners {
            num: 1,
            action,
            quorum,
            needed,
            usable,
            installed,
            ..
        } => (
            action,
            *quorum,
            *needed,
            usable.iter().map(|n| n.as_str()).collect(),
            installed.iter().map(|n| n.as_str()).collect(),
        ),
        other => panic!("not too few signers on unit 1: {other:?}"),
    }
}

#[test]
fn adding_in_imprint_mode_is_unsigned() {
    let a = eight();
    let s = unit(&[&a[0]], 0, 0);
    let p = admin_set::plan_unit(1, &s, &Change::Add(a[1].clone()), &infos(&[&a[0]])).unwrap();
    assert_eq!(p.order, Order::Single);
    assert_eq!(p.steps.len(), 1);
    assert_eq!((p.steps[0].quorum, p.steps[0].needed), (Quorum::None, 0));
    assert!(p.steps[0].signers.is_empty());
    assert_eq!(p.steps[0].action, Action::Add(a[1].clone()));
    assert_eq!(p.expected.admins, infos(&[&a[0], &a[1]]));
    assert_eq!((p.expected.sig_threshold, p.expected.rev_threshold), (0, 0));
}

#[test]
fn adding_takes_the_signature_threshold_from_installed_keys_that_may_sign() {
    let a = eight();
    let s = unit(&[&a[0], &a[1], &a[2]], 2, 1);
    let add = Change::Add(a[3].clone());
    // One of the keys that may sign is installed (a[3] is not yet): refused up front.
    let p = refused(&s, &add, &infos(&[&a[3], &a[0]]));
    assert_eq!(p.len(), 1);
    assert_eq!(
        short(&p[0]),
        (
            "adding an administrator",
            Quorum::SignatureThreshold,
            2,
            vec!["admin-a"],
            vec!["admin-a", "admin-b", "admin-c"]
        )
    );
    let text = p[0].to_string();
    assert!(
        text.ends_with(
            "adding an administrator needs the signatures of 2 of its administrators (its \
             signature threshold), and 1 of the signature keys that may sign is installed on \
             it: admin-a (installed administrators: admin-a, admin-b, admin-c)"
        ),
        "{text}"
    );
    // Two: signed by the first two in order of preference.
    let p = admin_set::plan_unit(1, &s, &add, &infos(&[&a[2], &a[0], &a[1]])).unwrap();
    assert_eq!(names(&p.steps[0].signers), ["admin-c", "admin-a"]);
    assert_eq!(p.steps[0].needed, 2);
}

#[test]
fn adding_is_refused_as_the_unit_would() {
    let a = eight();
    let all: Vec<&AdminCertificate> = a.iter().collect();
    let keys = infos(&all);
    // Already installed.
    let s = unit(&all[..2], 1, 1);
    let p = refused(&s, &Change::Add(a[1].clone()), &keys);
    assert!(
        matches!(rule(&p[0]), Rule::AdminInstalled { admin, .. } if admin.ski == a[1].ski()),
        "{p:?}"
    );
    // Eight installed.
    let s = unit(&all, 1, 1);
    let p = refused(&s, &Change::Add(cert("ninth")), &keys);
    assert!(
        matches!(rule(&p[0]), Rule::AdminsFull { admin } if admin.as_str() == "ninth"),
        "{p:?}"
    );
    // A name that looks like an installed one.
    let s = unit(&all[..2], 1, 1);
    let p = refused(&s, &Change::Add(cert("ADMIN-A")), &keys);
    assert!(
        matches!(rule(&p[0]), Rule::LookalikeName { installed, .. } if installed.as_str() == "admin-a"),
        "{p:?}"
    );
    // Refused and too few signers: both reasons.
    let s = unit(&all[..2], 2, 1);
    let p = refused(&s, &Change::Add(a[0].clone()), &infos(&[&a[0]]));
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(matches!(rule(&p[0]), Rule::AdminInstalled { .. }));
    assert_eq!(short(&p[1]).2, 2);
}

#[test]
fn removing_takes_the_revocation_threshold_and_keeps_both_thresholds_met() {
    let a = eight();
    let s = unit(&[&a[0], &a[1], &a[2]], 1, 2);
    let keys = infos(&[&a[0], &a[1], &a[2]]);
    let p = admin_set::plan_unit(1, &s, &Change::Remove(info(&a[2])), &keys).unwrap();
    assert_eq!(
        (p.steps[0].quorum, p.steps[0].needed),
        (Quorum::RevocationThreshold, 2)
    );
    assert_eq!(names(&p.steps[0].signers), ["admin-a", "admin-b"]);
    assert_eq!(p.expected.admins, infos(&[&a[0], &a[1]]));
    // Not installed.
    let p = refused(&s, &Change::Remove(info(&a[5])), &keys);
    assert!(matches!(rule(&p[0]), Rule::AdminNotInstalled { .. }));
    // Below the revocation threshold.
    let s = unit(&[&a[0], &a[1]], 1, 2);
    let p = refused(&s, &Change::Remove(info(&a[1])), &keys);
    assert_eq!(
        rule(&p[0]),
        &Rule::RemovalBelowThreshold {
            admin: a[1].name().clone(),
            remaining: 1,
            sig_threshold: 1,
            rev_threshold: 2
        }
    );
    // In imprint mode anyone may remove anyone, unsigned.
    let s = unit(&[&a[0]], 0, 0);
    let p = admin_set::plan_unit(1, &s, &Change::Remove(info(&a[0])), &[]).unwrap();
    assert_eq!(p.steps[0].quorum, Quorum::None);
    assert!(p.expected.admins.is_empty());
}

#[test]
fn thresholds_leave_imprint_mode_with_the_new_count_and_change_with_the_current_one() {
    let a = eight();
    let three = [&a[0], &a[1], &a[2]];
    let keys = infos(&three);
    let leave = Change::Thresholds {
        signature: t(3),
        revocation: t(1),
    };
    let s = unit(&three, 0, 0);
    let p = admin_set::plan_unit(1, &s, &leave, &keys).unwrap();
    assert_eq!(p.steps[0].quorum, Quorum::NewSignatureThreshold(3));
    assert_eq!((p.steps[0].needed, p.steps[0].signers.len()), (3, 3));
    assert_eq!((p.expected.sig_threshold, p.expected.rev_threshold), (3, 1));
    // Two keys may sign: leaving with 3 is refused, whatever the current threshold (0).
    let p = refused(&s, &leave, &keys[..2]);
    let (what, quorum, needed, usable, _) = short(&p[0]);
    assert_eq!(
        (what, quorum, needed, usable.len()),
        (
            "leaving imprint mode",
            Quorum::NewSignatureThreshold(3),
            3,
            2
        )
    );
    // Out of imprint mode the current signature threshold signs, even when lowering it.
    let s = unit(&three, 3, 1);
    let lower = Change::Thresholds {
        signature: t(1),
        revocation: t(1),
    };
    let p = refused(&s, &lower, &keys[..1]);
    let (what, quorum, needed, _, _) = short(&p[0]);
    assert_eq!(
        (what, quorum, needed),
        ("setting the thresholds", Quorum::SignatureThreshold, 3)
    );
    // Above the number of administrators.
    let p = refused(
        &s,
        &Change::Thresholds {
            signature: t(2),
            revocation: t(4),
        },
        &keys,
    );
    assert_eq!(
        rule(&p[0]),
        &Rule::ThresholdsAboveAdmins {
            signature: 2,
            revocation: 4,
            admins: 3
        }
    );
    // Already set: nothing to send.
    let same = Change::Thresholds {
        signature: t(3),
        revocation: t(1),
    };
    let p = admin_set::plan_unit(1, &s, &same, &keys).unwrap();
    assert!(p.steps.is_empty());
}

fn set(admins: &[&AdminCertificate], sig: u32, rev: u32) -> Change {
    Change::Set(AdminSet {
        admins: admins.iter().map(|c| (*c).clone()).collect(),
        sig_threshold: t(sig),
        rev_threshold: t(rev),
    })
}

fn actions(p: &UnitChange) -> Vec<String> {
    p.steps.iter().map(|s| s.action.to_string()).collect()
}

#[test]
fn case_a_removes_then_adds_then_sets_and_added_keys_sign_leaving_imprint_mode() {
    let a = eight();
    // Imprint mode, a and b installed (someone's half-done setup); want b, c, d at 3/2.
    let s = unit(&[&a[0], &a[1]], 0, 0);
    let change = set(&[&a[1], &a[2], &a[3]], 3, 2);
    let keys = infos(&[&a[1], &a[2], &a[3]]);
    let p = admin_set::plan_unit(1, &s, &change, &keys).unwrap();
    assert_eq!(p.order, Order::RemoveFirst);
    assert_eq!(
        actions(&p),
        [
            "remove admin-a",
            "add admin-c",
            "add admin-d",
            "set thresholds 3/2"
        ]
    );
    assert!(p.steps[..3].iter().all(|s| s.signers.is_empty()));
    assert_eq!(p.steps[3].quorum, Quorum::NewSignatureThreshold(3));
    assert_eq!(
        names(&p.steps[3].signers),
        ["admin-b", "admin-c", "admin-d"]
    );
    assert_eq!(p.expected.admins, keys);
    // Out of imprint mode with 2/1: removal by 1, additions and thresholds by 2.
    let s = unit(&[&a[0], &a[1], &a[2]], 2, 1);
    let change = set(&[&a[1], &a[2], &a[3]], 2, 2);
    let p = admin_set::plan_unit(1, &s, &change, &keys).unwrap();
    assert_eq!(p.order, Order::RemoveFirst);
    assert_eq!(
        actions(&p),
        ["remove admin-a", "add admin-d", "set thresholds 2/2"]
    );
    let counts: Vec<usize> = p.steps.iter().map(|s| s.signers.len()).collect();
    assert_eq!(counts, [1, 2, 2]);
}

#[test]
fn case_b_lowers_the_revocation_threshold_before_removing() {
    let a = eight();
    // 1/3 with a, b, c; want a, b, d at 1/2: the kept a and b meet the new 2.
    let s = unit(&[&a[0], &a[1], &a[2]], 1, 3);
    let keys = infos(&[&a[0], &a[1], &a[3]]);
    let p = admin_set::plan_unit(1, &s, &set(&[&a[0], &a[1], &a[3]], 2, 2), &keys).unwrap();
    assert_eq!(p.order, Order::RevocationFirst);
    assert_eq!(
        actions(&p),
        [
            "set thresholds 1/2",
            "remove admin-c",
            "add admin-d",
            "set thresholds 2/2"
        ]
    );
    let quorums: Vec<(Quorum, usize)> = p.steps.iter().map(|s| (s.quorum, s.needed)).collect();
    assert_eq!(
        quorums,
        [
            (Quorum::SignatureThreshold, 1),
            (Quorum::RevocationThreshold, 2),
            (Quorum::SignatureThreshold, 1),
            (Quorum::SignatureThreshold, 1)
        ]
    );
    assert_eq!(names(&p.steps[1].signers), ["admin-a", "admin-b"]);
    // When the final thresholds are those of the first step, it is not sent twice.
    let p = admin_set::plan_unit(1, &s, &set(&[&a[0], &a[1], &a[3]], 1, 2), &keys).unwrap();
    assert_eq!(
        actions(&p),
        ["set thresholds 1/2", "remove admin-c", "add admin-d"]
    );
}

#[test]
fn case_c_adds_first_so_the_new_administrators_sign_the_removals() {
    let a = eight();
    // 1/3 with a, b, c; want a, d, e at 1/3: only a is kept, so d and e must sign too.
    let s = unit(&[&a[0], &a[1], &a[2]], 1, 3);
    let keys = infos(&[&a[0], &a[3], &a[4]]);
    let p = admin_set::plan_unit(1, &s, &set(&[&a[0], &a[3], &a[4]], 1, 3), &keys).unwrap();
    assert_eq!(p.order, Order::AddFirst);
    assert_eq!(
        actions(&p),
        [
            "add admin-d",
            "add admin-e",
            "remove admin-b",
            "remove admin-c"
        ]
    );
    assert_eq!(
        names(&p.steps[2].signers),
        ["admin-a", "admin-d", "admin-e"]
    );
    assert_eq!(p.expected.admins, keys);
    assert_eq!((p.expected.sig_threshold, p.expected.rev_threshold), (1, 3));
}

/// The SDK's known edge case: after the additions of case C, fewer administrators can sign
/// than the current revocation threshold. The SDK panics half-way; the plan names the
/// step before anything is sent.
#[test]
fn case_c_edge_is_found_before_the_first_command() {
    let a = eight();
    let five = [&a[0], &a[1], &a[2], &a[3], &a[4]];
    let s = unit(&five, 1, 5);
    // Target: a (kept) and f (new), thresholds 1/2; the keys are those of the target.
    let keys = infos(&[&a[0], &a[5]]);
    let change = set(&[&a[0], &a[5]], 1, 2);
    let p = refused(&s, &change, &keys);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        short(&p[0]),
        (
            "removing an administrator (order C: after the additions)",
            Quorum::RevocationThreshold,
            5,
            vec!["admin-a", "admin-f"],
            vec!["admin-a", "admin-b", "admin-c", "admin-d", "admin-e", "admin-f"]
        )
    );
    let text = p[0].to_string();
    assert!(
        text.ends_with(
            "removing an administrator (order C: after the additions) needs the signatures of 5 \
             of its administrators (its revocation signature threshold), and 2 of the signature \
             keys that may sign are installed on it: admin-a, admin-f (installed \
             administrators: admin-a, admin-b, admin-c, admin-d, admin-e, admin-f)"
        ),
        "{text}"
    );
    // Lowering the revocation threshold first, as a change of its own, makes it work.
    let lowered = admin_set::plan_unit(
        1,
        &s,
        &Change::Thresholds {
            signature: t(1),
            revocation: t(2),
        },
        &keys,
    )
    .unwrap();
    let s = unit(&five, 1, 2);
    assert_eq!(
        (
            lowered.expected.sig_threshold,
            lowered.expected.rev_threshold
        ),
        (1, 2)
    );
    let p = admin_set::plan_unit(1, &s, &change, &keys).unwrap();
    assert_eq!(p.order, Order::AddFirst);
    assert_eq!(p.expected.admins, keys);
}

#[test]
fn case_c_beyond_eight_administrators_is_refused_at_the_addition() {
    let a = eight();
    let seven: Vec<&AdminCertificate> = a[..7].iter().collect();
    let s = unit(&seven, 1, 7);
    // Keep a, add h and a ninth, remove the rest (7 + 2 > 8), revocation threshold 2
    // (more than the one kept administrator, so not case B).
    let ninth = cert("ninth");
    let keys = infos(&[&a[0], &a[7], &ninth]);
    let p = refused(&s, &set(&[&a[0], &a[7], &ninth], 1, 2), &keys);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        matches!(rule(&p[0]), Rule::AdminsFull { admin } if admin.as_str() == "ninth"),
        "{p:?}"
    );
}

#[test]
fn a_whole_set_is_checked_before_any_unit() {
    let a = eight();
    let ninth = cert("ninth");
    let s = unit(&[&a[0]], 0, 0);
    let units = [(1, &s), (2, &s)];
    let all: Vec<&AdminCertificate> = a.iter().chain([&ninth]).collect();
    let p = admin_set::plan(&units, &set(&all, 1, 1), &[]).unwrap_err();
    assert!(
        matches!(p[..], [Problem::TooManyAdmins { count: 9 }]),
        "{p:?}"
    );
    let p = admin_set::plan(&units, &set(&[&a[0]], 2, 1), &[]).unwrap_err();
    assert!(
        matches!(
            p[..],
            [Problem::TooFewAdmins {
                count: 1,
                needed: 2
            }]
        ),
        "{p:?}"
    );
    let lookalike = cert("Admin-A");
    let p = admin_set::plan(&units, &set(&[&a[0], &a[0], &lookalike], 1, 1), &[]).unwrap_err();
    assert!(
        matches!(
            p[..],
            [
                Problem::DuplicateAdmin { .. },
                Problem::LookalikeAdmins { .. }
            ]
        ),
        "{p:?}"
    );
    assert!(admin_set::plan(&[], &set(&[&a[0]], 1, 1), &[])
        .unwrap()
        .is_empty());
}

#[test]
fn a_rename_is_refused() {
    let a = eight();
    let s = unit(&[&a[0], &a[1]], 1, 1);
    // a[0]'s key under another name: a certificate made from the same key.
    let renamed = {
        let key = EcdsaKey::random();
        let public = PublicKey::from(key.verifying_key());
        let sign = |n: &str| {
            AdminCertificate::build(
                &AdminName::new(n).unwrap(),
                &public,
                Box::new(|m: &[u8]| Ok(key.sign(m)?)),
            )
            .unwrap()
        };
        (sign("old-name"), sign("new-name"))
    };
    let s = UnitStatus {
        admins: vec![info(&a[0]), info(&renamed.0)],
        ..s
    };
    let p = refused(&s, &set(&[&a[0], &renamed.1], 1, 1), &infos(&[&a[0]]));
    assert!(
        matches!(rule(&p[0]), Rule::Renamed { installed, name } if installed.name.as_str() == "old-name" && name.as_str() == "new-name"),
        "{p:?}"
    );
}

#[test]
fn every_unit_that_would_refuse_is_named() {
    let a = eight();
    let ok = unit(&[&a[0], &a[1]], 1, 1);
    let short = unit(&[&a[0], &a[1]], 2, 1);
    let full = unit(&a.iter().collect::<Vec<_>>(), 1, 1);
    let units = [(1, &ok), (2, &short), (3, &full)];
    let p = admin_set::plan(&units, &Change::Add(cert("new")), &infos(&[&a[0]])).unwrap_err();
    let nums: Vec<usize> = p
        .iter()
        .map(|p| match p {
            Problem::TooFewSigners { num, .. } | Problem::Precondition { num, .. } => *num,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(nums, [2, 3]);
}

/// `LeaveImprintMode` (the deprecated `cryptounit-exit-impr`): thresholds on units in
/// imprint mode, a refusal on units that have left it.
#[test]
fn leaving_imprint_mode_only_leaves_it() {
    let a = eight();
    let leave = Change::LeaveImprintMode {
        signature: t(1),
        revocation: t(1),
    };
    let keys = infos(&[&a[0], &a[1]]);
    let imprint = unit(&[&a[0], &a[1]], 0, 0);
    let p = admin_set::plan_unit(1, &imprint, &leave, &keys).unwrap();
    assert_eq!(actions(&p), ["set thresholds 1/1"]);
    assert_eq!(names(&p.steps[0].signers), ["admin-a"]);
    let left = unit(&[&a[0], &a[1]], 2, 2);
    let p = refused(&left, &leave, &keys);
    assert_eq!(
        rule(&p[0]),
        &Rule::LeftImprintMode {
            sig_threshold: 2,
            rev_threshold: 2
        }
    );
}
