//! Control points through the real binary on the embedded fleet: `cryptounit-cp` shows,
//! sets and resets them, `cryptounit-cp-btc` / `-eddsa` / `-sig-other` turn one on, and
//! `cryptounit-compare` shows them under `CONTROL POINTS` and counts them; each refusal
//! with its snapshot and a check that nothing changed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    terminal::{
        check_steps as check_terminal,
        Answer::{End, Line},
        Terminal,
    },
    Workstation,
};
use serde_json::{json, Value};

/// The administrators' passwords.
const PW: &[(&str, &str)] = &[("alice", "alice-password-1"), ("bob", "bob-password-22")];

/// The default embedded fleet (units 1, 2 operational; 3, 4 recovery) and the keys of
/// alice and bob, not installed yet; nothing selected. Returns the secrets file too.
fn fleet() -> (Workstation, String) {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init"]);
    let s = w.file_keys(PW);
    (w, s)
}

/// Runs `args` expecting the refusal snapshotted as `name` with exit code `code`, and
/// checks that no file of the workstation (the embedded fleet's units included) changed.
fn refused(w: &Workstation, name: &str, args: &[&str], code: i32) {
    let before = w.snapshot();
    w.check(name, args, code, &[]);
    assert_eq!(before, w.snapshot(), "{name}: something changed");
}

/// `--secrets SECRETS`, then `args`.
fn with_secrets<'a>(secrets: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    [&["--secrets", secrets][..], args].concat()
}

/// Per unit of `cryptounit-compare --output json`: whether each named point is set, in
/// the order ALG_EC_25519, BTC, ECDSA_OTHER.
fn named(w: &Workstation) -> Vec<[bool; 3]> {
    w.compare_json()
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            let n = &u["control_points"]["named"];
            [
                n["XCP_CPB_ALG_EC_25519"].as_bool().unwrap(),
                n["XCP_CPB_BTC"].as_bool().unwrap(),
                n["XCP_CPB_ECDSA_OTHER"].as_bool().unwrap(),
            ]
        })
        .collect()
}

/// Each unit's transaction counter, from `cryptounit-compare --output json`.
fn counters(w: &Workstation) -> Vec<Value> {
    w.compare_json()
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["counter"].clone())
        .collect()
}

#[test]
fn reset_and_set_on_every_unit_and_compare_counts_them() {
    let (w, s) = fleet();
    w.auto_init(&s, (2, 1), &["alice", "bob"]);
    let ok = |name: &str, args: &[&str]| w.check(name, &with_secrets(&s, args), 0, &[]);

    w.check("ok_cryptounit_cp", &["cryptounit-cp"], 0, &[]);
    let shown: Value = serde_json::from_str(&w.ok(&["cryptounit-cp", "--output", "json"])).unwrap();
    for u in shown.as_array().unwrap() {
        assert_eq!(
            u["control_points"],
            json!({
                "mask": "00000000000001003000000000000000",
                "set": [55, 66, 67],
                "named": {"XCP_CPB_ALG_EC_25519": true, "XCP_CPB_BTC": true, "XCP_CPB_ECDSA_OTHER": true},
            }),
            "{u}"
        );
    }

    ok("ok_cp_reset", &["cryptounit-cp", "--reset", "66", "--yes"]);
    assert_eq!(named(&w), [[true, false, true]; 4]);
    let compare = w.ok(&["cryptounit-compare"]);
    assert!(
        compare.contains("CRYPTO UNIT NUM   XCP_CPB_ALG_EC_25519   XCP_CPB_BTC   XCP_CPB_ECDSA_OTHER\n1                 Set                    Not Set       Set\n"),
        "{compare}"
    );
    assert!(compare.contains("are configured identically"), "{compare}");

    ok("ok_cp_btc", &["cryptounit-cp-btc"]);
    assert_eq!(named(&w), [[true; 3]; 4]);
    // Set everywhere already: nothing is sent, no counter moves.
    let before = counters(&w);
    ok("ok_cp_btc_nothing_sent", &["cryptounit-cp-btc"]);
    assert_eq!(counters(&w), before);

    // Unit 1 alone gets point 12 and loses XCP_CPB_ECDSA_OTHER: compare says the units
    // differ and shows the other point.
    w.ok(&["cryptounit-rm", "2", "3", "4"]);
    w.ok(&with_secrets(
        &s,
        &["cryptounit-cp", "--set", "12", "--yes"],
    ));
    w.ok(&with_secrets(
        &s,
        &["cryptounit-cp", "--reset", "xcp_cpb_ecdsa_other", "--yes"],
    ));
    w.ok(&["cryptounit-add", "2", "3", "4"]);
    w.check(
        "compare_control_points_differ",
        &["cryptounit-compare"],
        0,
        &[],
    );
    let units = w.compare_json();
    assert_eq!(units[0]["control_points"]["set"], json!([12, 55, 66]));
    assert_eq!(units[1]["control_points"]["set"], json!([55, 66, 67]));

    // cryptounit-cp-sig-other turns it on where it is off: on unit 1 only.
    let out = w.ok(&with_secrets(
        &s,
        &["cryptounit-cp-sig-other", "--output", "json"],
    ));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        json!({
            "control_point": 67,
            "name": "XCP_CPB_ECDSA_OTHER",
            "set": true,
            "changed": [1],
            "unchanged": [2, 3, 4],
            "signed_by": ["alice", "bob"],
        })
    );
    assert_eq!(named(&w), [[true; 3]; 4]);
    // cryptounit-cp-eddsa: set everywhere already.
    let v: Value =
        serde_json::from_str(&w.ok(&["cryptounit-cp-eddsa", "--output", "json"])).unwrap();
    assert_eq!(v["changed"], json!([]));
    assert_eq!(v["signed_by"], json!([]));
}

#[test]
fn refusals_change_nothing() {
    let (w, s) = fleet();
    let refuse = |name: &str, args: &[&str], code: i32| {
        refused(&w, name, &with_secrets(&s, args), code);
    };
    refuse(
        "nothing_selected_cp",
        &["cryptounit-cp", "--reset", "66", "--yes"],
        1,
    );
    w.ok(&["cryptounit-add", "1", "2", "3", "4"]);
    refuse(
        "cp_imprint_mode",
        &["cryptounit-cp", "--reset", "66", "--yes"],
        1,
    );
    refuse("cp_eddsa_imprint_mode", &["cryptounit-cp-eddsa"], 1);

    w.auto_init(&s, (2, 1), &["alice", "bob"]);
    let cp = "cryptounit-cp";
    for (name, args, code) in [
        ("cp_number_out_of_range", &[cp, "--set", "128"][..], 2),
        ("cp_unknown_name", &[cp, "--reset", "XCP_CPB_BITCOIN"], 2),
        ("cp_set_and_reset", &[cp, "--set", "66", "--reset", "55"], 2),
        // The signature threshold is 2.
        (
            "cp_too_few_signers",
            &[cp, "--reset", "66", "--signer", "alice", "--yes"],
            1,
        ),
        // Without a terminal, the confirmation names its flag.
        ("no_terminal_cp_confirmation", &[cp, "--reset", "66"], 1),
    ] {
        refuse(name, args, code);
    }
    // XCP_CPB_ECDSA_OTHER off everywhere: turning it on needs 2 signatures too.
    w.ok(&with_secrets(
        &s,
        &["cryptounit-cp", "--reset", "67", "--yes"],
    ));
    refuse(
        "cp_sig_other_too_few_signers",
        &["cryptounit-cp-sig-other", "--signer", "bob"],
        1,
    );
    // ... and so do the passwords.
    refused(
        &w,
        "no_terminal_cp_password",
        &["cryptounit-cp", "--reset", "66", "--yes"],
        1,
    );
    let args = with_secrets(&s, &["cryptounit-cp", "--reset", "XCP_CPB_BTC"]);
    check_terminal(&w, "cancelled_cp", &args, &[("> ", Line("n"))], 3);
}

/// On a terminal, without --set or --reset: the control points, then which one to
/// change and how (asked again after a bad answer), then the confirmation.
#[test]
fn cryptounit_cp_asks_on_a_terminal() {
    let (w, s) = fleet();
    w.auto_init(&s, (2, 1), &["alice", "bob"]);
    let args = with_secrets(&s, &["cryptounit-cp"]);
    check_terminal(&w, "interactive_cp_nothing", &args, &[("> ", Line(""))], 0);
    check_terminal(&w, "stdin_closed_at_cp", &args, &[("> ", End)], 1);

    let mut t = Terminal::spawn(&w, &args);
    for answer in ["200", "XCP_CPB_BTC", "unset", "reset", "y"] {
        t.expect("> ");
        t.answer(&Line(answer));
    }
    t.check("interactive_cp", 0, &[(w.path(), "[WS]")]);
    assert_eq!(named(&w), [[true, false, true]; 4]);
}

#[test]
fn help_explains_the_control_point_commands() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let cp = w.ok(&["help", "cryptounit-cp"]);
    assert_eq!(cp, w.ok(&["cryptounit-cp", "--help"]));
    for text in [
        "--set",
        "--reset",
        "--signer",
        "--yes",
        "XCP_CPB_ALG_EC_25519  EdDSA",
        "XCP_CPB_BTC           BIP32",
        "XCP_CPB_ECDSA_OTHER   elliptic curve signatures other than ECDSA and EdDSA",
        "signature threshold",
        "imprint mode",
    ] {
        assert!(cp.contains(text), "{text}\n{cp}");
    }
    for (c, name) in [
        ("cryptounit-cp-btc", "XCP_CPB_BTC"),
        ("cryptounit-cp-eddsa", "XCP_CPB_ALG_EC_25519"),
        ("cryptounit-cp-sig-other", "XCP_CPB_ECDSA_OTHER"),
    ] {
        let help = w.ok(&["help", c]);
        assert!(
            help.contains(name) && help.contains("--signer"),
            "{c}\n{help}"
        );
    }
    let all = w.ok(&["help"]);
    assert!(all.contains("cryptounit-cp-sig-other"), "{all}");
}
