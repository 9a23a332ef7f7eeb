//! Administrators and thresholds through the real binary: `cryptounit-admins`,
//! `cryptounit-thrhlds`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    terminal::{Answer::Hidden, Answer::Line, Terminal},
    Workstation,
};
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
    let s = w.file_keys(PW);
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

/// Writes `text` to `name` in the workstation directory, mode 0600; returns its path.
fn private_file(w: &Workstation, name: &str, text: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = w.path().join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.to_str().unwrap().to_owned()
}

/// `--secrets S` then `args`.
fn with<'a>(s: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    [&["--secrets", s][..], args].concat()
}

/// Runs a refused change: exit code 1, the snapshot `name`, and no unit changed (the
/// counters included: nothing was sent).
fn refused(w: &Workstation, name: &str, args: &[&str]) {
    let before = w.compare_json();
    w.check(name, args, 1, &[]);
    assert_eq!(
        w.compare_json(),
        before,
        "{name}: a refused change changed a unit"
    );
}

/// The thresholds of every selected unit, which must agree.
fn thresholds(w: &Workstation) -> (u64, u64) {
    let v = json(w, &["cryptounit-thrhlds"]);
    let all: Vec<(u64, u64)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["sig_threshold"].as_u64().unwrap(),
                u["rev_threshold"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(all.windows(2).all(|p| p[0] == p[1]), "{all:?}");
    all[0]
}

/// The administrators of every selected unit, by name, which must agree.
fn admins(w: &Workstation) -> Vec<String> {
    let v = json(w, &["cryptounit-admins"]);
    let all: Vec<Vec<String>> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            u["admins"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .collect();
    assert!(all.windows(2).all(|p| p[0] == p[1]), "{all:?}");
    all[0].clone()
}

/// The quorum rules through the real binary: imprint mode unsigned, leaving it with the
/// new signature threshold, additions with the signature threshold, removals with the
/// revocation threshold; each refusal up front, with nothing changed.
#[test]
fn quorum_rules_and_who_signs() {
    let (w, s) = with_keys();
    let out = w.ok(&with(&s, &["cryptounit-admin-add", "--admin", "alice"]));
    assert!(
        out.contains("\nSigned by: (no signature needed)\nOK\n"),
        "{out}"
    );
    w.ok(&with(&s, &["cryptounit-admin-add", "--admin", "bob"]));
    assert_eq!(admins(&w), ["alice", "bob"]);
    assert_eq!(thresholds(&w), (0, 0));

    // Leaving imprint mode takes the NEW signature threshold: 2 here, one key refused.
    let t22 = [
        "cryptounit-thrhld-set",
        "--sig-threshold",
        "2",
        "--rev-threshold",
        "2",
    ];
    refused(
        &w,
        "thrhld_set_leaving_imprint_mode_one_signer",
        &with(&s, &[&t22[..], &["--signer", "alice"]].concat()),
    );
    let out = w.ok(&with(&s, &t22));
    assert!(out.contains("\nSigned by: alice, bob\nOK\n"), "{out}");
    assert!(out.contains("left imprint mode"), "{out}");
    assert_eq!(thresholds(&w), (2, 2));

    // Adding takes the signature threshold: one signature refused, two accepted.
    let add_carol = ["cryptounit-admin-add", "--admin", "carol"];
    refused(
        &w,
        "admin_add_one_signature_threshold_two",
        &with(&s, &[&add_carol[..], &["--signer", "alice"]].concat()),
    );
    let out = w.ok(&with(
        &s,
        &[&add_carol[..], &["--signer", "alice", "--signer", "bob"]].concat(),
    ));
    assert!(out.contains("\nSigned by: alice, bob\nOK\n"), "{out}");
    assert_eq!(admins(&w), ["alice", "bob", "carol"]);

    // Removing takes the revocation threshold (2).
    let rm_carol = ["cryptounit-admin-rm", "--admin", "carol"];
    refused(
        &w,
        "admin_rm_one_signature_revocation_two",
        &with(&s, &[&rm_carol[..], &["--signer", "bob"]].concat()),
    );
    // The selection says who MAY sign: bob and carol here, and only their passwords are
    // asked (alice's is not in this secrets file, and there is no terminal to ask on).
    let bob_carol = private_file(
        &w,
        "bob-carol.toml",
        "bob = \"bob-password-22\"\ncarol = \"carol-password-3\"\n",
    );
    w.ok(&["sigkey-sel", "2", "3"]);
    let help = w.ok(&["help", "sigkey-sel"]);
    assert!(
        help.contains("which keys MAY sign, not which will")
            && help.contains("`--signer NAME`")
            && help.contains("--show"),
        "{help}"
    );
    let sel = w.ok(&["sigkey-sel", "--show"]);
    assert!(
        sel.starts_with("Selected signature keys: bob, carol."),
        "{sel}"
    );
    let out = w.ok(&with(&bob_carol, &rm_carol));
    assert!(out.contains("\nSigned by: bob, carol\nOK\n"), "{out}");
    assert_eq!(admins(&w), ["alice", "bob"]);
    // --signer overrides the selection.
    let v = json(
        &w,
        &with(
            &s,
            &[
                "cryptounit-thrhld-set",
                "--sig-threshold",
                "2",
                "--rev-threshold",
                "1",
                "--signer",
                "alice",
                "--signer",
                "bob",
            ],
        ),
    );
    assert_eq!(v["signed_by"], serde_json::json!(["alice", "bob"]), "{v}");
    assert_eq!(v["left_imprint_mode"], serde_json::json!([]), "{v}");
    assert_eq!(thresholds(&w), (2, 1));
    w.ok(&["sigkey-sel", "--clear"]);

    // Each precondition, once: refused before anything is sent.
    refused(
        &w,
        "admin_add_already_installed",
        &with(&s, &["cryptounit-admin-add", "--admin", "alice"]),
    );
    refused(
        &w,
        "admin_rm_not_installed",
        &with(&s, &["cryptounit-admin-rm", "--admin", "carol"]),
    );
    refused(
        &w,
        "admin_rm_below_signature_threshold",
        &with(&s, &["cryptounit-admin-rm", "--admin", "bob"]),
    );
    refused(
        &w,
        "thrhld_set_above_the_administrators",
        &with(
            &s,
            &[
                "cryptounit-thrhld-set",
                "--sig-threshold",
                "3",
                "--rev-threshold",
                "1",
            ],
        ),
    );
    refused(
        &w,
        "thrhld_set_zero",
        &with(
            &s,
            &[
                "cryptounit-thrhld-set",
                "--sig-threshold",
                "1",
                "--rev-threshold",
                "0",
            ],
        ),
    );
    refused(
        &w,
        "thrhld_set_nine",
        &with(
            &s,
            &[
                "cryptounit-thrhld-set",
                "--sig-threshold",
                "9",
                "--rev-threshold",
                "1",
            ],
        ),
    );
    // Only carol's key may sign, and she is installed nowhere.
    refused(
        &w,
        "admin_add_no_installed_key_may_sign",
        &with(
            &s,
            &[
                "cryptounit-admin-add",
                "--admin",
                "carol",
                "--signer",
                "carol",
            ],
        ),
    );
    refused(
        &w,
        "exit_impr_out_of_imprint_mode",
        &with(&s, &["cryptounit-exit-impr"]),
    );
    // Lowering a threshold is signed by the current one; setting it again sends nothing.
    let t11 = [
        "cryptounit-thrhld-set",
        "--sig-threshold",
        "1",
        "--rev-threshold",
        "1",
    ];
    let out = w.ok(&with(&s, &t11));
    assert!(out.contains("\nSigned by: alice, bob\nOK\n"), "{out}");
    let out = w.ok(&with(&s, &t11));
    assert!(out.contains("nothing was sent"), "{out}");
}

/// A unit holds at most 8 administrators: the ninth is refused before any password.
#[test]
fn a_ninth_administrator_is_refused() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init", "--operational", "1", "--recovery", "0"]);
    let names: Vec<String> = (1..=9).map(|i| format!("admin{i}")).collect();
    let pairs: Vec<(&str, &str)> = names
        .iter()
        .map(|n| (n.as_str(), "a-long-password"))
        .collect();
    let s = w.file_keys(&pairs);
    let s = s.as_str();
    w.ok(&["cryptounit-add", "1"]);
    for n in &names[..8] {
        w.ok(&["--secrets", s, "cryptounit-admin-add", "--admin", n]);
    }
    assert_eq!(admins(&w).len(), 8);
    // Without a secrets file: no password is asked before the refusal.
    refused(
        &w,
        "admin_add_ninth",
        &["cryptounit-admin-add", "--admin", "admin9"],
    );
}

/// Without a terminal, every question the commands would ask is an error naming the flag
/// that answers it; nothing is changed.
#[test]
fn without_a_terminal_the_error_names_the_flag() {
    let (w, s) = with_keys();
    w.ok(&with(&s, &["cryptounit-admin-add", "--admin", "alice"]));
    refused(&w, "no_terminal_admin_add_key", &["cryptounit-admin-add"]);
    refused(&w, "no_terminal_admin_rm_admin", &["cryptounit-admin-rm"]);
    refused(
        &w,
        "no_terminal_admin_add_password",
        &["cryptounit-admin-add", "--admin", "bob"],
    );
    refused(
        &w,
        "no_terminal_thrhld_set_sig_threshold",
        &["cryptounit-thrhld-set"],
    );
    refused(
        &w,
        "no_terminal_thrhld_set_rev_threshold",
        &["cryptounit-thrhld-set", "--sig-threshold", "1"],
    );
    // Leaving imprint mode needs alice's signature: her password.
    refused(
        &w,
        "no_terminal_thrhld_set_password",
        &[
            "cryptounit-thrhld-set",
            "--sig-threshold",
            "1",
            "--rev-threshold",
            "1",
        ],
    );
}

/// The deprecated `cryptounit-exit-impr` leaves imprint mode with both thresholds 1, signed
/// by one administrator, and says what to use instead.
#[test]
fn exit_impr_sets_both_thresholds_to_one() {
    let (w, s) = with_keys();
    w.ok(&with(&s, &["cryptounit-admin-add", "--admin", "alice"]));
    w.ok(&with(&s, &["cryptounit-admin-add", "--admin", "bob"]));
    let o = w.run(&with(&s, &["cryptounit-exit-impr"]));
    assert!(o.status.success(), "{o:?}");
    let (out, err) = (
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    );
    assert!(
        err.contains("cryptounit-exit-impr is deprecated")
            && err.contains("`tke cryptounit-thrhld-set`"),
        "{err}"
    );
    assert!(out.contains("\nSigned by: alice\nOK\n"), "{out}");
    assert_eq!(thresholds(&w), (1, 1));
}

/// On a terminal, as the vendor's: the key to install picked by KEYNUM and its password,
/// the thresholds asked, the administrator to remove picked from the installed list, and
/// the signers' passwords asked hidden — only those of the keys that sign.
#[test]
fn on_a_terminal() {
    let (w, _) = with_keys();
    let session = |name: &str, args: &[&str], steps: &[(&str, common::terminal::Answer)]| {
        let mut t = Terminal::spawn(&w, args);
        for (at, answer) in steps {
            t.expect(at);
            t.answer(answer);
        }
        t.check(name, 0, &[(w.path(), "[WS]")]);
    };
    for (keynum, pw) in [("1", "alice-password-1"), ("3", "carol-password-3")] {
        session(
            &format!("terminal_admin_add_{keynum}"),
            &["cryptounit-admin-add"],
            &[("> ", Line(keynum)), ("> ", Hidden(pw))],
        );
    }
    // Leaving imprint mode with 1/1: one signature, alice's (the first key installed).
    session(
        "terminal_thrhld_set",
        &["cryptounit-thrhld-set"],
        &[
            ("> ", Line("1")),
            ("> ", Line("1")),
            ("> ", Hidden("alice-password-1")),
        ],
    );
    session(
        "terminal_admin_rm",
        &["cryptounit-admin-rm"],
        &[("> ", Line("2")), ("> ", Hidden("alice-password-1"))],
    );
    assert_eq!(admins(&w), ["alice"]);
    assert_eq!(thresholds(&w), (1, 1));
}
