//! Administrators and thresholds through the real binary: `cryptounit-admins`,
//! `cryptounit-thrhlds`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Workstation;
use serde_json::Value;

const PW: &[(&str, &str)] = &[
    ("alice", "alice-password-1"),
    ("bob", "bob-password-22"),
    ("carol", "carol-password-3"),
];

/// A workstation with the default embedded fleet (2 operational + 2 recovery units, all
/// selected) and file keys for alice, bob and carol; returns it with its secrets file.
fn with_keys() -> (Workstation, String) {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init"]);
    let s = w.secrets(PW);
    let s = s.to_str().unwrap().to_owned();
    for (name, _) in PW {
        w.ok(&["--secrets", &s, "sigkey-add", "--name", name]);
    }
    w.ok(&["cryptounit-add", "1", "2", "3", "4"]);
    (w, s)
}

fn json(w: &Workstation, args: &[&str]) -> Value {
    let out = w.ok(&[args, &["--output", "json"]].concat());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}:\n{out}"))
}

/// The SKI of the workstation's key of `name` (full hex).
fn ski(w: &Workstation, name: &str) -> String {
    let keys = json(w, &["sigkeys"]);
    let key = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .unwrap();
    key["ski"].as_str().unwrap().to_owned()
}

#[test]
fn admins_and_thresholds_of_the_selected_units() {
    let (w, s) = with_keys();
    // Imprint mode: 0/0, nobody installed.
    w.check(
        "ok_cryptounit_thrhlds_imprint",
        &["cryptounit-thrhlds"],
        0,
        &[],
    );
    w.check("ok_cryptounit_admins_none", &["cryptounit-admins"], 0, &[]);
    w.ok(&[
        "--secrets",
        &s,
        "auto-init",
        "--sig-threshold",
        "2",
        "--rev-threshold",
        "1",
        "--admin",
        "alice",
        "--admin",
        "bob",
        "--yes",
    ]);
    w.ok(&["cryptounit-rm", "2"]);
    w.check("ok_cryptounit_admins", &["cryptounit-admins"], 0, &[]);
    let admins = json(&w, &["cryptounit-admins"]);
    let nums: Vec<u64> = admins
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["num"].as_u64().unwrap())
        .collect();
    assert_eq!(nums, [1, 3, 4], "only the selected units");
    let expected = serde_json::json!([
        {"name": "alice", "ski": ski(&w, "alice")},
        {"name": "bob", "ski": ski(&w, "bob")},
    ]);
    for u in admins.as_array().unwrap() {
        assert_eq!(u["admins"], expected, "{u}");
        assert!(u["type"].is_string() && u["instance"].is_string(), "{u}");
    }
    let thresholds = json(&w, &["cryptounit-thrhlds"]);
    for u in thresholds.as_array().unwrap() {
        assert_eq!(
            (&u["sig_threshold"], &u["rev_threshold"], &u["imprint_mode"]),
            (&Value::from(2), &Value::from(1), &Value::from(false)),
            "{u}"
        );
    }
    let table = w.ok(&["cryptounit-thrhlds"]);
    assert!(
        table.contains("SIGNATURE THRESHOLD   REVOCATION SIGNATURE THRESHOLD"),
        "{table}"
    );
    // Nothing selected: the error says how to select.
    w.ok(&["cryptounit-rm", "1", "3", "4"]);
    w.check("nothing_selected_admins", &["cryptounit-admins"], 1, &[]);
    let err = w.fails(&["cryptounit-thrhlds"], 1);
    assert!(err.contains("tke cryptounit-add"), "{err}");
}
