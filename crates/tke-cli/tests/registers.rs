//! The master key register commands (`cryptounit-mk`, `-commit`, `-setimm`, `-clrnew`,
//! `-clrcur`) and `failover-enable` through the real binary on the embedded fleet: what
//! they show, and each refusal with its snapshot and a check that nothing changed.
//!
//! The tests load random values into new master key registers through the library
//! ([`load_new`]) while `tke` is not running (`cryptounit-mk-load`, from parts, is tested
//! in `key_parts_ceremony.rs`).
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
use tke_client::{Client, EmbeddedFleet, Transport};
use tke_sigkey::Signer;
use tke_sigkey_file::FileSigner;
use tke_test_support::mk::load_new_register;
use tke_workstation::{FilesDir, Password};

/// The administrators' passwords.
const PW: &[(&str, &str)] = &[("alice", "alice-password-1"), ("bob", "bob-password-22")];

/// The default embedded fleet (units 1, 2 operational; 3, 4 recovery) initialized by
/// alice and bob with thresholds 2/1 (every unit selected, current registers Valid, new
/// registers Empty); returns the workstation and its secrets file.
fn initialized() -> (Workstation, String) {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init"]);
    let s = w.secrets(PW);
    let s = s.to_str().unwrap().to_owned();
    for (name, _) in PW {
        w.ok(&["--secrets", &s, "sigkey-add", "--name", name]);
    }
    w.auto_init(&s, (2, 1), &["alice", "bob"]);
    (w, s)
}

/// Generates a random value in the new register of recovery unit `source` and copies it
/// into the new registers of `targets` (CRYPTO UNIT NUMs), through the library, signed by
/// every key of the workstation.
fn load_new(w: &Workstation, source: usize, targets: &[usize]) {
    let files = FilesDir::resolve(Some(w.path())).unwrap();
    let keys: Vec<FileSigner> = files
        .signature_keys()
        .unwrap()
        .entries
        .iter()
        .map(|e| {
            let pw = PW.iter().find(|(n, _)| *n == e.name.as_str()).unwrap().1;
            FileSigner::open(e, &Password::new(pw)).unwrap()
        })
        .collect();
    let signers: Vec<&dyn Signer> = keys.iter().map(|k| k as &dyn Signer).collect();
    let fleet = EmbeddedFleet::open(&files.local_dir()).unwrap();
    let ca = fleet.ca().clone();
    let client = Client::connect(vec![(
        std::sync::Arc::new(fleet) as std::sync::Arc<dyn Transport>,
        ca,
    )])
    .unwrap();
    let unit = |n: usize| &client.units()[n - 1];
    let targets: Vec<_> = targets.iter().map(|&n| unit(n)).collect();
    load_new_register(&client, unit(source), &targets, &signers);
}

/// `cryptounit-mk --output json`: (new state, new VP, current state, current VP) per unit.
fn registers(w: &Workstation) -> Vec<(String, Value, String, Value)> {
    let v: Value = serde_json::from_str(&w.ok(&["cryptounit-mk", "--output", "json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["new_mk"]["state"].as_str().unwrap().to_owned(),
                u["new_mk"]["vp"].clone(),
                u["current_mk"]["state"].as_str().unwrap().to_owned(),
                u["current_mk"]["vp"].clone(),
            )
        })
        .collect()
}

/// Runs `args` expecting the refusal snapshotted as `name`, and checks that no file of
/// the workstation (the embedded fleet's units included) changed.
fn refused(w: &Workstation, name: &str, args: &[&str]) {
    let before = w.snapshot();
    w.check(name, args, 1, &[]);
    assert_eq!(before, w.snapshot(), "{name}: something changed");
}

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
    w.auto_init(s, (1, 1), &["alice"]);
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

#[test]
fn register_commands_are_refused_in_imprint_mode() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init"]);
    w.ok(&["cryptounit-add", "1", "2", "3", "4"]);
    refused(&w, "mk_commit_imprint_mode", &["cryptounit-mk-commit"]);
    refused(
        &w,
        "mk_setimm_imprint_mode",
        &["cryptounit-mk-setimm", "--yes"],
    );
    refused(&w, "mk_clrnew_imprint_mode", &["cryptounit-mk-clrnew"]);
    refused(
        &w,
        "mk_clrcur_imprint_mode",
        &["cryptounit-mk-clrcur", "--yes"],
    );
    w.ok(&["cryptounit-rm", "1", "2", "3", "4"]);
    refused(&w, "nothing_selected_mk_commit", &["cryptounit-mk-commit"]);
}

/// `--secrets SECRETS`, then `args`.
fn with_secrets<'a>(secrets: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    [&["--secrets", secrets][..], args].concat()
}

/// Load, commit, set immediate, clear new, clear current on one fleet, each command's
/// refusals on the way: the wrong register state, too few keys, no password, no answer,
/// a declined confirmation.
#[test]
fn register_commands_walk_the_registers_through_their_states() {
    let (w, s) = initialized();
    let refuse = |name: &str, args: &[&str]| refused(&w, name, &with_secrets(&s, args));
    let ok = |name: &str, args: &[&str]| w.check(name, &with_secrets(&s, args), 0, &[]);
    let declined = |name: &str, command: &str, answer: &str| {
        let args = with_secrets(&s, &[command]);
        check_terminal(&w, name, &args, &[("> ", Line(answer))], 3);
    };
    // New registers Empty.
    refuse("mk_commit_new_register_empty", &["cryptounit-mk-commit"]);
    refuse(
        "mk_setimm_new_register_empty",
        &["cryptounit-mk-setimm", "--yes"],
    );
    refuse("mk_clrnew_new_register_empty", &["cryptounit-mk-clrnew"]);
    let initial = registers(&w);

    load_new(&w, 3, &[1, 2, 4]);
    let loaded = registers(&w);
    let vp = loaded[0].1.clone();
    assert!(loaded
        .iter()
        .all(|r| r.0 == "full_uncommitted" && r.1 == vp && r.3 == initial[0].3));
    // Commit needs the signature threshold, 2: alice alone is refused on every unit.
    refuse(
        "mk_commit_too_few_signers",
        &["cryptounit-mk-commit", "--signer", "alice"],
    );
    // Without --secrets and a terminal, the first password names the flag.
    refused(
        &w,
        "no_terminal_mk_commit_password",
        &["cryptounit-mk-commit"],
    );
    ok("ok_mk_commit", &["cryptounit-mk-commit"]);
    assert!(registers(&w)
        .iter()
        .all(|r| r.0 == "full_committed" && r.1 == vp));

    // Set immediate asks first: without a terminal, --yes; declined, nothing changes.
    refuse(
        "no_terminal_mk_setimm_confirmation",
        &["cryptounit-mk-setimm"],
    );
    declined("cancelled_mk_setimm", "cryptounit-mk-setimm", "n");
    ok("ok_mk_setimm", &["cryptounit-mk-setimm", "--yes"]);
    let promoted = registers(&w);
    assert!(promoted
        .iter()
        .all(|r| r.0 == "empty" && r.2 == "valid" && r.3 == vp));

    // Clear new: one signature, the first key that may sign.
    load_new(&w, 4, &[1, 2, 3]);
    let out = w.ok(&with_secrets(
        &s,
        &["cryptounit-mk-clrnew", "--output", "json"],
    ));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["units"], serde_json::json!([1, 2, 3, 4]));
    assert_eq!(v["signed_by"], serde_json::json!(["alice"]));
    assert_eq!(registers(&w), promoted);

    // Clear current: a recovery unit needs its signature threshold.
    refuse(
        "mk_clrcur_recovery_one_key",
        &["cryptounit-mk-clrcur", "--signer", "alice", "--yes"],
    );
    refuse(
        "no_terminal_mk_clrcur_confirmation",
        &["cryptounit-mk-clrcur"],
    );
    declined("cancelled_mk_clrcur", "cryptounit-mk-clrcur", "");
    ok("ok_mk_clrcur", &["cryptounit-mk-clrcur", "--yes"]);
    assert!(registers(&w)
        .iter()
        .all(|r| r.2 == "empty" && r.3 == Value::Null));
    refuse(
        "mk_clrcur_current_register_empty",
        &["cryptounit-mk-clrcur", "--yes"],
    );
}

/// Commit carries one value: units that hold different ones are each named.
#[test]
fn commit_refuses_different_values() {
    let (w, s) = initialized();
    load_new(&w, 3, &[1]);
    load_new(&w, 4, &[2]);
    refused(
        &w,
        "mk_commit_different_values",
        &["--secrets", &s, "cryptounit-mk-commit"],
    );
}

#[test]
fn help_explains_the_register_commands_and_failover_enable() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    for (c, flags) in [
        ("cryptounit-mk", &[][..]),
        ("cryptounit-mks", &[]),
        ("cryptounit-mk-commit", &["--signer"]),
        ("cryptounit-mk-setimm", &["--signer", "--yes"]),
        ("cryptounit-mk-clrnew", &["--signer"]),
        ("cryptounit-mk-clrcur", &["--signer", "--yes"]),
        ("failover-enable", &["--total", "--yes"]),
    ] {
        let via_help = w.ok(&["help", c]);
        assert_eq!(via_help, w.ok(&[c, "--help"]), "tke help {c}");
        for f in flags {
            assert!(via_help.contains(f), "{c}: {f}\n{via_help}");
        }
    }
    let all = w.ok(&["help"]);
    for c in ["cryptounit-mk-commit", "failover-enable", "cryptounit-mks"] {
        assert!(all.contains(c), "{c}\n{all}");
    }
}
