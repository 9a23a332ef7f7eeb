//! The master key register commands (`cryptounit-mk`) and `failover-enable` through the
//! real binary on the embedded fleet: what they show, and each refusal with its snapshot
//! and a check that nothing changed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    terminal::{
        check_steps as check_terminal,
        Answer::{End, Line},
    },
    Workstation,
};
use serde_json::Value;

/// `cryptounits --output json`.
fn units(w: &Workstation) -> Vec<Value> {
    let out = w.ok(&["cryptounits", "--output", "json"]);
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// `CRYPTO UNIT NUM` of the units of type `t` (`operational`, `recovery`, `failover`).
fn nums_of(units: &[Value], t: &str) -> Vec<u64> {
    units
        .iter()
        .filter(|u| u["type"] == t)
        .map(|u| u["num"].as_u64().unwrap())
        .collect()
}

#[test]
fn cryptounit_mk_shows_both_registers() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init", "--failover", "1"]);
    w.check("nothing_selected_mk", &["cryptounit-mk"], 1, &[]);
    let s = w.secrets(&[("alice", "alice-password-1")]);
    let s = s.to_str().unwrap();
    w.ok(&["--secrets", s, "sigkey-add", "--name", "alice"]);
    w.ok(&[
        "--secrets",
        s,
        "auto-init",
        "--sig-threshold",
        "1",
        "--rev-threshold",
        "1",
        "--admin",
        "alice",
        "--yes",
    ]);
    w.check("ok_cryptounit_mk", &["cryptounit-mk"], 0, &[]);
    // The troubleshooting pages' spelling is the same command.
    assert_eq!(w.ok(&["cryptounit-mks"]), w.ok(&["cryptounit-mk"]));
    let v: Value = serde_json::from_str(&w.ok(&["cryptounit-mk", "--output", "json"])).unwrap();
    let v = v.as_array().unwrap();
    assert_eq!(v.len(), 5);
    let vp = v[0]["current_mk"]["vp"].as_str().unwrap();
    assert_eq!(vp.len(), 64);
    for u in v {
        assert_eq!(u["current_mk"]["state"], "valid", "{u}");
        assert_eq!(u["current_mk"]["vp"], vp, "{u}");
        assert_eq!(u["new_mk"]["state"], "empty", "{u}");
        assert_eq!(u["new_mk"]["vp"], Value::Null, "{u}");
    }
    assert_eq!(
        v.iter()
            .map(|u| u["type"].as_str().unwrap())
            .collect::<Vec<_>>(),
        [
            "operational",
            "operational",
            "recovery",
            "recovery",
            "failover"
        ]
    );
}

/// The vendor's limits: with 2 operational units the total is 2; with 3 it is 2 or 3;
/// a full instance gets none; each refusal changes nothing.
#[test]
fn failover_enable_adds_units_within_the_limits() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init", "--operational", "2", "--instances", "2"]);
    w.ok(&["cryptounit-add", "1", "2", "3", "4"]);
    let before = w.snapshot();
    w.check(
        "failover_enable_total_too_large",
        &["failover-enable", "--total", "3", "--yes"],
        1,
        &[],
    );
    w.check(
        "failover_enable_total_too_small",
        &["failover-enable", "--total", "1", "--yes"],
        1,
        &[],
    );
    w.check(
        "no_terminal_failover_enable_total",
        &["failover-enable", "--yes"],
        1,
        &[],
    );
    w.check(
        "no_terminal_failover_enable_confirmation",
        &["failover-enable", "--total", "2"],
        1,
        &[],
    );
    assert_eq!(before, w.snapshot(), "a refusal changed the workstation");

    w.check(
        "ok_failover_enable",
        &["failover-enable", "--total", "2", "--yes"],
        0,
        &[],
    );
    let after = units(&w);
    // Instance 1: 2 operational, 2 recovery, then the 2 new failover units, unselected;
    // instance 2 follows, renumbered.
    assert_eq!(nums_of(&after, "failover"), [5, 6]);
    assert_eq!(after.len(), 10);
    assert!(after[4..6].iter().all(|u| u["selected"] == false));
    assert_eq!(after[4]["instance"], after[0]["instance"]);
    assert_ne!(after[6]["instance"], after[0]["instance"]);
    // They are new units in imprint mode.
    w.ok(&["cryptounit-add", "5", "6"]);
    for u in w.compare_json().as_array().unwrap() {
        assert_eq!(u["imprint_mode"], true, "{u}");
    }
    let before = w.snapshot();
    w.check(
        "failover_enable_full",
        &["failover-enable", "--total", "2", "--yes"],
        1,
        &[],
    );
    assert_eq!(before, w.snapshot());

    // Three operational units: 2, then the third.
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init", "--operational", "3", "--recovery", "1"]);
    w.ok(&["cryptounit-add", "1", "2", "3", "4"]);
    let json = |total: &str| -> Value {
        let out = w.ok(&[
            "failover-enable",
            "--total",
            total,
            "--yes",
            "--output",
            "json",
        ]);
        serde_json::from_str(&out).unwrap()
    };
    assert_eq!(json("2")["added"], serde_json::json!([5, 6]));
    w.ok(&["cryptounit-add", "5", "6"]);
    let third = json("3");
    assert_eq!(third["added"], serde_json::json!([7]));
    assert_eq!(third["failover_units"], 3);
    assert_eq!(nums_of(&units(&w), "failover"), [5, 6, 7]);
}

#[test]
fn failover_enable_needs_every_unit_of_one_instance() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init", "--instances", "2", "--operational", "1"]);
    let before = w.snapshot();
    w.check(
        "nothing_selected_failover_enable",
        &["failover-enable", "--total", "2", "--yes"],
        1,
        &[],
    );
    assert_eq!(before, w.snapshot());
    w.ok(&["cryptounit-add", "1", "2"]);
    let before = w.snapshot();
    // Instance 1 has one operational unit: no failover units at all, and unit 3 of it
    // is not selected.
    w.check(
        "failover_enable_part_of_an_instance",
        &["failover-enable", "--total", "2", "--yes"],
        1,
        &[],
    );
    w.ok(&["cryptounit-add", "3", "4"]);
    w.check(
        "failover_enable_two_instances",
        &["failover-enable", "--total", "2", "--yes"],
        1,
        &[],
    );
    w.ok(&["cryptounit-rm", "4"]);
    assert_eq!(before.len(), w.snapshot().len());
    assert_eq!(nums_of(&units(&w), "failover"), Vec::<u64>::new());
}

/// On a terminal: the count and maximum, the total asked again after a bad answer, the
/// notice, and a declined confirmation that adds nothing.
#[test]
fn failover_enable_asks_on_a_terminal() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init", "--operational", "3"]);
    w.ok(&["cryptounit-add", "1", "2", "3", "4", "5"]);
    check_terminal(
        &w,
        "cancelled_failover_enable",
        &["failover-enable"],
        &[
            ("> ", Line("four")),
            ("> ", Line("4")),
            ("> ", Line("3")),
            ("> ", Line("n")),
        ],
        3,
    );
    check_terminal(
        &w,
        "stdin_closed_at_failover_enable",
        &["failover-enable"],
        &[("> ", End)],
        1,
    );
}
