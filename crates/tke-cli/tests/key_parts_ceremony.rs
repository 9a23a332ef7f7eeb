//! The key-part ceremony through the real binary: a service instance of 2 operational and
//! 2 failover units initialized from master key parts (administrators, thresholds, parts,
//! `cryptounit-mk-load`, `-commit`, `-setimm`), its master key checked against the VP of
//! the parts' XOR computed here with OpenSSL; a unit whose key was cleared recovered by
//! loading the same parts again; every refusal of `cryptounit-mk-load` with its snapshot
//! and a check that nothing changed; the vendor's prompts on a terminal; and the same load
//! into a crypto unit on a SoftHSM2 token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{fs, os::unix::fs::PermissionsExt, path::Path};

use common::{
    terminal::{
        Answer::{Hidden, Line},
        Terminal,
    },
    Workstation,
};
use serde_json::Value;
use tke_test_support::softhsm::{self, module_text};

/// The administrators' passwords and the parts' (by description, quoted TOML keys).
const PW: &[(&str, &str)] = &[
    ("alice", "alice-password-1"),
    ("bob", "bob-password-22"),
    ("carol", "carol-password-333"),
    ("\"part a\"", "part-a-password-1"),
    ("\"part b\"", "part-b-password-22"),
    ("\"part c\"", "part-c-password-333"),
    ("\"part d\"", "part-d-password-4444"),
];

/// The parts' values, as their owners give them with `mk-add --value-file`.
const A: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const B: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const C: &str = "a5a5a5a55a5a5a5a0123456789abcdeffedcba98765432100f0f0f0ff0f0f0f0";

fn tke() -> Workstation {
    Workstation::new(env!("CARGO_BIN_EXE_tke"))
}

fn bytes(hex: &str) -> [u8; 32] {
    let mut b = [0u8; 32];
    for (i, v) in b.iter_mut().enumerate() {
        *v = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    b
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|v| format!("{v:02x}")).collect()
}

/// The XOR of the values, as 64 hex digits.
fn xor(values: &[&str]) -> String {
    let mut key = [0u8; 32];
    for v in values {
        for (k, b) in key.iter_mut().zip(bytes(v)) {
            *k ^= b;
        }
    }
    to_hex(&key)
}

/// The VP of a key (`docs/protocol.md` §12), computed by OpenSSL: the CMAC of each of the
/// two blocks under the key.
fn openssl_vp(dir: &Path, key_hex: &str) -> String {
    let mut vp = String::new();
    for i in 1u8..=2 {
        let block = dir.join(format!("vp-block-{i}"));
        fs::write(&block, [b"TKE-VP-v1-block".as_slice(), &[i]].concat()).unwrap();
        let o = std::process::Command::new("openssl")
            .args(["mac", "-cipher", "AES-256-CBC", "-macopt"])
            .arg(format!("hexkey:{key_hex}"))
            .arg("-in")
            .arg(&block)
            .arg("CMAC")
            .output()
            .expect("openssl (ci/setup.sh installs it)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        vp.push_str(String::from_utf8(o.stdout).unwrap().trim());
    }
    vp.to_lowercase()
}

/// The secrets file with every password; its path.
fn secrets(w: &Workstation) -> String {
    w.secrets(PW).to_str().unwrap().to_owned()
}

/// Writes a secrets file `name` (0600) with these lines; its path.
fn secrets_file(w: &Workstation, name: &str, pairs: &[(&str, &str)]) -> String {
    let p = w.path().join(name);
    let text: String = pairs
        .iter()
        .map(|(k, v)| format!("{k} = \"{v}\"\n"))
        .collect();
    fs::write(&p, text).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    p.to_str().unwrap().to_owned()
}

/// Creates the signature keys of these administrators.
fn sigkeys(w: &Workstation, s: &str, names: &[&str]) {
    for n in names {
        w.ok(&["--secrets", s, "sigkey-add", "--name", n]);
    }
}

/// Creates the part `description` of `value` with `mk-add --value-file`.
fn add_part(w: &Workstation, s: &str, description: &str, value: &str) {
    let file = w.path().join("value.hex");
    fs::write(&file, value).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    w.ok(&[
        "--secrets",
        s,
        "mk-add",
        "--value-file",
        file.to_str().unwrap(),
        "--description",
        description,
    ]);
    fs::remove_file(file).unwrap();
}

/// `--secrets S cryptounit-mk-load --part D ...`, then `extra`.
fn load_args<'a>(s: &'a str, parts: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--secrets", s, "cryptounit-mk-load"];
    for p in parts {
        args.extend(["--part", p]);
    }
    args.extend(extra);
    args
}

/// Runs `args` expecting the refusal snapshotted as `name`, and checks that no file of
/// the workstation (the embedded fleet's units included) changed.
fn refused(w: &Workstation, name: &str, args: &[&str]) {
    let before = w.snapshot();
    w.check(name, args, 1, &[]);
    assert_eq!(before, w.snapshot(), "{name}: something changed");
}

/// Asserts that every selected unit holds `vp` Valid in its current register and nothing
/// in its new register, out of imprint mode with thresholds 2/2 and exactly `admins`.
fn every_unit_holds(w: &Workstation, vp: &str, admins: &[&str]) -> Vec<Value> {
    let units = w.compare_json().as_array().unwrap().clone();
    for u in &units {
        assert_eq!(u["current_mk"]["state"], "valid", "{u}");
        assert_eq!(u["current_mk"]["vp"], vp, "{u}");
        assert_eq!(u["new_mk"]["state"], "empty", "{u}");
        assert_eq!(u["imprint_mode"], false, "{u}");
        assert_eq!(u["sig_threshold"], 2, "{u}");
        assert_eq!(u["rev_threshold"], 2, "{u}");
        let names: Vec<&str> = u["admins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, admins, "{u}");
    }
    units
}

#[test]
fn the_whole_key_part_ceremony_on_operational_and_failover_units() {
    let w = tke();
    w.ok(&[
        "local",
        "init",
        "--operational",
        "2",
        "--recovery",
        "0",
        "--failover",
        "2",
    ]);
    let s = secrets(&w);
    // Every unit of the instance, failover units included.
    w.ok(&["cryptounit-add", "1", "2", "3", "4"]);
    // One signature key per administrator; the three may sign.
    sigkeys(&w, &s, &["alice", "bob", "carol"]);
    w.ok(&["sigkey-sel", "1", "2", "3"]);
    // Administrators installed unsigned in imprint mode, then thresholds 2/2: leaving
    // imprint mode is signed by two of them.
    w.install_admins(&s, &["alice", "bob", "carol"], (2, 2));
    // Three parts, each made by its owner.
    for (d, v) in [("part a", A), ("part b", B), ("part c", C)] {
        add_part(&w, &s, d, v);
    }
    let vp = openssl_vp(w.path(), &xor(&[A, B, C]));

    w.check(
        "ok_mk_load",
        &load_args(&s, &["part a", "part b", "part c"], &[]),
        0,
        &[],
    );
    let registers: Value =
        serde_json::from_str(&w.ok(&["cryptounit-mk", "--output", "json"])).unwrap();
    for u in registers.as_array().unwrap() {
        assert_eq!(u["new_mk"]["state"], "full_uncommitted", "{u}");
        assert_eq!(u["new_mk"]["vp"], vp, "{u}");
        assert_eq!(u["current_mk"]["state"], "empty", "{u}");
    }
    w.ok(&["--secrets", &s, "cryptounit-mk-commit"]);
    w.ok(&["--secrets", &s, "cryptounit-mk-setimm", "--yes"]);
    let units = every_unit_holds(&w, &vp, &["alice", "bob", "carol"]);
    let types: Vec<&str> = units.iter().map(|u| u["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["operational", "operational", "failover", "failover"]
    );

    // The same parts again, in another order: their XOR is the current master key. Only
    // the units know it (the workstation never combines the parts), and each refuses:
    // registers, administrators and thresholds unchanged (the importer key is used up and
    // the counter moved).
    let registers = |units: Vec<Value>| -> Vec<(Value, Value, Value)> {
        units
            .into_iter()
            .map(|u| {
                (
                    u["new_mk"].clone(),
                    u["current_mk"].clone(),
                    u["admins"].clone(),
                )
            })
            .collect()
    };
    let before = registers(w.compare_json().as_array().unwrap().clone());
    w.check(
        "mk_load_same_master_key",
        &load_args(&s, &["part c", "part a", "part b"], &[]),
        1,
        &[],
    );
    assert_eq!(
        registers(w.compare_json().as_array().unwrap().clone()),
        before
    );

    // Unit 3 loses its master key (a replaced unit): the same parts bring it back.
    w.ok(&["cryptounit-rm", "1", "2", "4"]);
    w.ok(&["--secrets", &s, "cryptounit-mk-clrcur", "--yes"]);
    let out = w.ok(&load_args(
        &s,
        &["part a", "part b", "part c"],
        &["--output", "json"],
    ));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["units"], serde_json::json!([3]));
    assert_eq!(v["vp"], vp);
    assert_eq!(v["signed_by"], serde_json::json!(["alice"]));
    let parts: Vec<&str> = v["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["description"].as_str().unwrap())
        .collect();
    assert_eq!(parts, ["part a", "part b", "part c"]);
    w.ok(&["--secrets", &s, "cryptounit-mk-commit"]);
    w.ok(&["--secrets", &s, "cryptounit-mk-setimm", "--yes"]);
    w.ok(&["cryptounit-add", "1", "2", "4"]);
    every_unit_holds(&w, &vp, &["alice", "bob", "carol"]);
}

#[test]
fn a_load_is_refused_in_imprint_mode_and_without_an_answer() {
    let w = tke();
    w.ok(&["local", "init", "--operational", "2", "--recovery", "0"]);
    let s = secrets(&w);
    sigkeys(&w, &s, &["alice"]);
    add_part(&w, &s, "part a", A);
    add_part(&w, &s, "part b", B);
    w.ok(&["cryptounit-add", "1", "2"]);
    refused(
        &w,
        "mk_load_imprint_mode",
        &load_args(&s, &["part a", "part b"], &[]),
    );
    // Without a terminal, the parts are not asked for: the error names the flag.
    refused(&w, "no_terminal_mk_load_parts", &load_args(&s, &[], &[]));
    // The help says what is asked, which flag answers it, and what comes next.
    let help = w.ok(&["help", "cryptounit-mk-load"]);
    assert_eq!(help, w.ok(&["cryptounit-mk-load", "--help"]));
    for what in [
        "--part",
        "--signer",
        "KEYNUM",
        "--secrets",
        "cryptounit-mk-commit",
    ] {
        assert!(help.contains(what), "{what}: {help}");
    }
}

#[test]
fn every_refusal_of_a_load_changes_nothing() {
    let w = tke();
    w.ok(&["local", "init", "--operational", "2", "--recovery", "1"]);
    let s = secrets(&w);
    sigkeys(&w, &s, &["alice", "bob", "carol"]);
    // alice and bob are installed, thresholds 2/2; carol is installed nowhere. Every unit
    // is selected, the recovery unit (3) included.
    w.auto_init(&s, (2, 2), &["alice", "bob"]);
    // Part c is the XOR of parts a and b: the three XOR to zero.
    for (d, v) in [
        ("part a", A),
        ("part b", B),
        ("part c", &xor(&[A, B])[..]),
        ("part d", C),
    ] {
        add_part(&w, &s, d, v);
    }
    let ab = ["part a", "part b"];

    refused(&w, "mk_load_recovery_unit", &load_args(&s, &ab, &[]));
    w.ok(&["cryptounit-rm", "3"]);
    refused(&w, "mk_load_one_part", &load_args(&s, &["part a"], &[]));
    refused(
        &w,
        "mk_load_four_parts",
        &load_args(&s, &["part a", "part b", "part c", "part d"], &[]),
    );
    refused(
        &w,
        "mk_load_same_part_twice",
        &load_args(&s, &["part a", "part a"], &[]),
    );
    refused(
        &w,
        "mk_load_parts_not_independent",
        &load_args(&s, &["part a", "part b", "part c"], &[]),
    );
    refused(
        &w,
        "mk_load_unknown_part",
        &load_args(&s, &["part a", "part x"], &[]),
    );
    refused(
        &w,
        "mk_load_too_few_signers",
        &load_args(&s, &ab, &["--signer", "carol"]),
    );
    let wrong = secrets_file(
        &w,
        "wrong.toml",
        &[
            ("alice", "alice-password-1"),
            ("\"part a\"", "part-a-password-1"),
            ("\"part b\"", "not-the-password-of-b"),
        ],
    );
    let err = w.fails(&load_args(&wrong, &ab, &[]), 1);
    assert!(
        err.contains("\"part b\"") && err.contains(".mkpart.toml") && !err.contains("not-the"),
        "{err}"
    );
    refused(
        &w,
        "mk_load_wrong_part_password",
        &load_args(&wrong, &ab, &[]),
    );
    let keys_only = secrets_file(&w, "keys.toml", &[("alice", "alice-password-1")]);
    refused(
        &w,
        "no_terminal_mk_load_part_password",
        &load_args(&keys_only, &ab, &[]),
    );

    // On a terminal, as the vendor asks: KEYNUMs, the signature key's password, then each
    // part's password (a wrong one is asked again). Unit 1 only.
    w.ok(&["cryptounit-rm", "2"]);
    let mut t = Terminal::spawn(&w, &["cryptounit-mk-load"]);
    for (at, answer) in [
        ("> ", Line("1 1")),
        ("> ", Line("1 2 3 4")),
        ("> ", Line("1 4")),
        ("> ", Hidden("alice-password-1")),
        ("> ", Hidden("part-a-password-0")),
        ("> ", Hidden("part-a-password-1")),
        ("> ", Hidden("part-d-password-4444")),
    ] {
        t.expect(at);
        t.answer(&answer);
    }
    t.check("interactive_mk_load", 0, &[(w.path(), "[WS]")]);
    let vp = openssl_vp(w.path(), &xor(&[A, C]));
    let registers: Value =
        serde_json::from_str(&w.ok(&["cryptounit-mk", "--output", "json"])).unwrap();
    assert_eq!(registers[0]["new_mk"]["state"], "full_uncommitted");
    assert_eq!(registers[0]["new_mk"]["vp"], vp);

    // Unit 1's new register is full now.
    w.ok(&["cryptounit-add", "2"]);
    refused(
        &w,
        "mk_load_new_register_full",
        &load_args(&s, &["part b", "part d"], &[]),
    );
}

#[test]
fn parts_load_into_a_unit_on_a_softhsm2_token() {
    let mut w = tke();
    let tokens = softhsm::Tokens::make(&w.path().join("tokens"), &["op-1"]);
    w.set_env("SOFTHSM2_CONF", tokens.conf());
    let pin = tokens.pin_pattern();
    // The operational unit on the token, the recovery unit soft.
    w.ok(&[
        "local",
        "init",
        "--operational",
        "1",
        "--recovery",
        "1",
        "--pkcs11-module",
        module_text(),
        "--pkcs11-tokens",
        "op-1",
        "--pkcs11-pin-file",
        &pin,
        "--pkcs11-units",
        "operational",
    ]);
    let s = secrets(&w);
    sigkeys(&w, &s, &["alice", "bob"]);
    w.auto_init(&s, (2, 2), &["alice", "bob"]);
    add_part(&w, &s, "part a", A);
    add_part(&w, &s, "part b", B);
    let vp = openssl_vp(w.path(), &xor(&[A, B]));
    w.ok(&["cryptounit-rm", "2"]);
    let out = w.ok(&load_args(&s, &["part a", "part b"], &["--output", "json"]));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["units"], serde_json::json!([1]));
    assert_eq!(v["vp"], vp);
    w.ok(&["--secrets", &s, "cryptounit-mk-commit"]);
    w.ok(&["--secrets", &s, "cryptounit-mk-setimm", "--yes"]);
    let compare = w.compare_json();
    assert_eq!(compare[0]["current_mk"]["state"], "valid");
    assert_eq!(compare[0]["current_mk"]["vp"], vp);
    assert_eq!(compare[0]["new_mk"]["state"], "empty");
}
