//! `cryptounits`, the selection commands and the `sigkey-*` commands through the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Workstation;
use serde_json::Value;

#[test]
fn cryptounits_lists_instances_in_the_vendor_layout() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&[
        "local",
        "init",
        "--instances",
        "2",
        "--operational",
        "3",
        "--recovery",
        "2",
        "--failover",
        "1",
    ]);
    let out = w.ok(&["cryptounits"]);
    assert_eq!(out.matches("SERVICE INSTANCE: ").count(), 2, "{out}");
    assert!(out.contains("CRYPTO UNIT NUM   SELECTED   TYPE"), "{out}");
    for t in ["OPERATIONAL", "RECOVERY", "FAILOVER"] {
        assert!(out.contains(t));
    }
    let v: Value = serde_json::from_str(&w.ok(&["cryptounits", "--output", "json"])).unwrap();
    let v = v.as_array().unwrap();
    assert_eq!(v.len(), 12);
    // One running sequence over all instances: operational, then recovery, then failover.
    let nums: Vec<u64> = v.iter().map(|u| u["num"].as_u64().unwrap()).collect();
    assert_eq!(nums, (1..=12).collect::<Vec<_>>());
    let types: Vec<&str> = v[..6].iter().map(|u| u["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "operational",
            "operational",
            "operational",
            "recovery",
            "recovery",
            "failover"
        ]
    );
    assert!(v.iter().all(|u| u["selected"] == Value::Bool(false)));
    assert!(v[0]["location"].as_str().unwrap().starts_with('['));
}

#[test]
fn selection_persists_and_bad_numbers_change_nothing() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init"]);
    w.ok(&["cryptounit-add", "1", "3"]);
    let sel = |w: &Workstation| -> Vec<u64> {
        let v: Value = serde_json::from_str(&w.ok(&["cryptounits", "--output", "json"])).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter(|u| u["selected"] == Value::Bool(true))
            .map(|u| u["num"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(sel(&w), [1, 3]);
    w.ok(&["cryptounit-rm", "1"]);
    assert_eq!(sel(&w), [3]);
    let before = w.snapshot();
    let err = w.fails(&["cryptounit-add", "2", "9"], 1);
    assert!(err.contains("CRYPTO UNIT NUM 9 does not exist"), "{err}");
    assert_eq!(before, w.snapshot());
    // Without numbers and without a terminal, the error names what to give.
    let err = w.fails(&["cryptounit-add"], 1);
    assert!(err.contains("CRYPTO UNIT NUM"), "{err}");
    assert_eq!(sel(&w), [3]);
    // compare shows the selected unit only, in imprint mode.
    let c = w.compare_json();
    assert_eq!(c.as_array().unwrap().len(), 1);
    assert_eq!(c[0]["imprint_mode"], Value::Bool(true));
    assert_eq!(c[0]["sig_threshold"], 0);
    assert_eq!(c[0]["current_mk"]["state"], "empty");
}

#[test]
fn compare_without_selection_says_what_to_do() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init"]);
    let err = w.fails(&["cryptounit-compare"], 1);
    assert!(err.contains("cryptounit-add"), "{err}");
}

#[test]
fn local_init_twice_is_refused() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init"]);
    let before = w.snapshot();
    let err = w.fails(&["local", "init"], 1);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(before, w.snapshot());
    let w2 = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let err = w2.fails(
        &["local", "init", "--failover", "3", "--operational", "2"],
        1,
    );
    assert!(err.contains("failover"), "{err}");
}

#[test]
fn sigkey_commands_add_list_select_remove() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let s = w.secrets(&[("alice", "alice-pw-123"), ("bob", "bob-pw-1234")]);
    let s = s.to_str().unwrap();
    w.ok(&["--secrets", s, "sigkey-add", "--name", "alice"]);
    w.ok(&["--secrets", s, "sigkey-add", "--name", "bob"]);
    let out = w.ok(&["sigkeys"]);
    assert!(
        out.contains("KEYNUM")
            && out.contains("DESCRIPTION")
            && out.contains("SUBJECT KEY IDENTIFIER"),
        "{out}"
    );
    assert!(out.contains("alice") && out.contains("..."), "{out}");
    w.ok(&["sigkey-sel", "2"]);
    let v: Value = serde_json::from_str(&w.ok(&["sigkeys", "--output", "json"])).unwrap();
    assert_eq!(v[0]["name"], "alice");
    assert_eq!(v[0]["kind"], "file");
    assert_eq!(v[1]["selected"], Value::Bool(true));
    assert_eq!(v[0]["selected"], Value::Bool(false));
    // A name over 30 characters is refused, nothing written.
    let before = w.snapshot();
    let err = w.fails(
        &[
            "--secrets",
            s,
            "sigkey-add",
            "--name",
            "abcdefghijklmnopqrstuvwxyz01234",
        ],
        1,
    );
    assert!(err.contains("30"), "{err}");
    // A missing password without a terminal names the way to give it.
    let err = w.fails(&["--secrets", s, "sigkey-add", "--name", "carol"], 1);
    assert!(err.contains("--secrets"), "{err}");
    let err = w.fails(&["sigkey-rm", "5", "--yes"], 1);
    assert!(err.contains("KEYNUM 5 does not exist"), "{err}");
    assert_eq!(before, w.snapshot());
    // Removal without --yes and without a terminal is refused.
    let err = w.fails(&["sigkey-rm", "1"], 1);
    assert!(err.contains("--yes"), "{err}");
    w.ok(&["sigkey-rm", "1", "--yes"]);
    let v: Value = serde_json::from_str(&w.ok(&["sigkeys", "--output", "json"])).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["name"], "bob");
}

/// KEYNUMs follow the order keys were added: "a b" sorts before admin1 by name, yet
/// admin1 keeps KEYNUM 1 (and a selection made by number keeps meaning the same key).
#[test]
fn adding_a_key_does_not_renumber_the_others() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    // A TOML key with a space is quoted.
    let s = w.secrets(&[("admin1", "admin1-pw-123"), ("\"a b\"", "a-b-pw-12345")]);
    let s = s.to_str().unwrap();
    w.ok(&["--secrets", s, "sigkey-add", "--name", "admin1"]);
    w.ok(&["sigkey-sel", "1"]);
    w.ok(&["--secrets", s, "sigkey-add", "--name", "a b"]);
    w.check("keynums_in_creation_order", &["sigkeys"], 0, &[]);
    let v: Value = serde_json::from_str(&w.ok(&["sigkeys", "--output", "json"])).unwrap();
    assert_eq!(v[0]["name"], "admin1");
    assert_eq!(v[0]["selected"], Value::Bool(true));
    assert_eq!(v[1]["name"], "a b");
}

/// `tke help`'s command list: the vendor's command table in its order, then tke's own
/// commands.
const VENDOR_ORDER: [&str; 41] = [
    "cryptounits",
    "cryptounit-add",
    "cryptounit-rm",
    "cryptounit-compare",
    "sigkeys",
    "sigkey-add",
    "sigkey-rm",
    "sigkey-sel",
    "mks",
    "mk-add",
    "mk-rm",
    "cryptounit-admins",
    "cryptounit-admin-add",
    "cryptounit-admin-rm",
    "cryptounit-thrhlds",
    "cryptounit-thrhld-set",
    "cryptounit-exit-impr",
    "cryptounit-cp",
    "cryptounit-cp-btc",
    "cryptounit-cp-eddsa",
    "cryptounit-cp-sig-other",
    "cryptounit-mk",
    "cryptounit-mk-load",
    "cryptounit-mk-commit",
    "cryptounit-mk-setimm",
    "cryptounit-mk-rotate",
    "cryptounit-mk-clrnew",
    "cryptounit-mk-clrcur",
    "cryptounit-zeroize",
    "auto-init",
    "auto-mk-rotate",
    "auto-recover",
    "failover-enable",
    "cryptounit-audit",
    "plan",
    "approve",
    "apply",
    "kms",
    "local",
    "target",
    "help",
];

#[test]
fn help_and_h_explain_commands() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let top = w.ok(&["help"]);
    let out = top.clone();
    for c in [
        "auto-init",
        "cryptounit-compare",
        "sigkey-add",
        "cryptounits",
    ] {
        assert!(out.contains(c), "{out}");
    }
    let out = w.ok(&["h", "auto-init"]);
    assert!(
        out.contains("--sig-threshold") && out.contains("--new-admin"),
        "{out}"
    );
    let err = w.fails(&["help", "no-such-command"], 2);
    assert!(err.contains("no-such-command"), "{err}");
    // Every command, in the vendor's order (its command table), then tke's own, each on
    // one line with a one-line description.
    let listed: Vec<(String, String)> = top
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| {
            assert!(
                !l.starts_with("   "),
                "a description on two lines: {l:?}\n{out}"
            );
            let l = l.trim_start();
            let (name, about) = l.split_once(' ').unwrap_or((l, ""));
            (name.to_owned(), about.trim().to_owned())
        })
        .collect();
    let names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, VENDOR_ORDER, "{top}");
    assert!(listed.iter().all(|(_, about)| !about.is_empty()), "{top}");
    // `tke help CMD` and `tke CMD --help` show the same text, global options included.
    let mut commands: Vec<Vec<&str>> = VENDOR_ORDER.iter().map(|c| vec![*c]).collect();
    commands.extend([
        vec!["local", "init"],
        vec!["target", "add"],
        vec!["kms", "create"],
        vec!["plan", "cryptounit-thrhld-set"],
    ]);
    for c in &commands {
        let via_help = w.ok(&[&["help"][..], c].concat());
        let via_flag = w.ok(&[&c[..], &["--help"][..]].concat());
        assert_eq!(via_help, via_flag, "tke help {c:?}");
        assert!(via_help.contains("--files-dir"), "{c:?}: {via_help}");
    }
    // An unknown command: the same message and exit code both ways.
    let c = "no-such-command";
    let a = w.run(&["help", c]);
    let b = w.run(&[c]);
    assert_eq!(a.status.code(), Some(2));
    assert_eq!(a.status.code(), b.status.code());
    assert_eq!(a.stderr, b.stderr);
    // Help needs no workstation directory.
    assert!(!w.path().join("local").exists());
}
