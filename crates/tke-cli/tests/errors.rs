//! Every error path of `tke` on the embedded fleet, through the real binary: the exit
//! code asserted (0 success, 1 failure, 2 usage error, 3 cancelled at a confirmation) and
//! what the operator reads committed as a snapshot in `tests/snapshots/`, so that a change
//! of wording is a reviewed diff. Remote fleets (`tke-unitd`, targets) are in
//! `errors_remote.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{fs, os::unix::fs::PermissionsExt};

use common::{
    terminal::{
        check_steps as check_terminal,
        Answer::{End, Hidden, Line},
    },
    Workstation,
};

const PW: &[(&str, &str)] = &[("alice", "alice-password-1"), ("bob", "bob-password-22")];

/// Thresholds 1 and 1: one administrator is enough.
const T11: [&str; 4] = ["--sig-threshold", "1", "--rev-threshold", "1"];

/// `--secrets SECRETS auto-init` with thresholds 1/1 and `--admin ADMIN`, then `extra`.
fn auto_init_as<'a>(secrets: &'a str, admin: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    [
        &["--secrets", secrets, "auto-init"][..],
        &T11,
        &["--admin", admin],
        extra,
    ]
    .concat()
}

/// Writes `text` to `name` in the workstation directory, mode 0600; returns its path.
fn private_file(w: &Workstation, name: &str, text: &str) -> String {
    let p = w.path().join(name);
    fs::write(&p, text).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    p.to_str().unwrap().to_owned()
}

/// The key file (`.key.pem`) of the only signature key of `name`.
fn key_file(w: &Workstation, name: &str) -> std::path::PathBuf {
    file_of(w, name, ".key.pem")
}

/// The certificate file of the only key named `name`.
fn cert_file(w: &Workstation, name: &str) -> std::path::PathBuf {
    file_of(w, name, ".crt.pem")
}

/// The file of the only key named `name` whose name ends in `suffix`.
fn file_of(w: &Workstation, name: &str, suffix: &str) -> std::path::PathBuf {
    let files: Vec<_> = fs::read_dir(w.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let f = p.file_name().unwrap().to_str().unwrap();
            f.starts_with(&format!("{name}-")) && f.ends_with(suffix)
        })
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

/// A workstation with the default embedded fleet and file keys for alice and bob; returns
/// it with the path of its secrets file.
fn with_keys() -> (Workstation, String) {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init"]);
    let s = w.file_keys(PW);
    (w, s)
}

#[test]
fn usage_errors_exit_2_and_touch_nothing() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let cases: &[(&str, &[&str])] = &[
        ("usage_no_command", &[]),
        ("usage_unknown_command", &["frobnicate"]),
        ("usage_unknown_flag", &["cryptounits", "--bogus"]),
        ("usage_missing_argument", &["target", "add", "only-a-name"]),
        ("usage_not_a_number", &["cryptounit-add", "two"]),
        ("usage_negative_unit_num", &["cryptounit-add", "-1"]),
        ("usage_negative_keynum", &["sigkey-rm", "-1"]),
        (
            "usage_instance_not_a_number",
            &["auto-init", "--instance", "x"],
        ),
        (
            "usage_negative_threshold",
            &["auto-init", "--sig-threshold", "-1"],
        ),
        (
            "usage_unknown_output_format",
            &["--output", "yaml", "sigkeys"],
        ),
        (
            "usage_pkcs11_and_yubikey",
            &["sigkey-add", "--pkcs11", "pkcs11:token=a", "--yubikey"],
        ),
        (
            "usage_pkcs11_tokens_without_module",
            &["local", "init", "--pkcs11-tokens", "a"],
        ),
        (
            "usage_unknown_pkcs11_units",
            &[
                "local",
                "init",
                "--pkcs11-module",
                "/m.so",
                "--pkcs11-tokens",
                "a",
                "--pkcs11-pin-file",
                "/p",
                "--pkcs11-units",
                "some",
            ],
        ),
    ];
    for (name, args) in cases {
        w.check(name, args, 2, &[]);
    }
    assert!(w.snapshot().is_empty(), "a usage error wrote files");
}

#[test]
fn success_exits_0() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.check("ok_version", &["--version"], 0, &[]);
    w.check("ok_sigkeys_none", &["sigkeys"], 0, &[]);
    w.check("ok_target_list_none", &["target", "list"], 0, &[]);
    // An unknown command to explain is the usage error `tke no-such-command` gives.
    w.check("help_unknown_command", &["help", "no-such-command"], 2, &[]);
}

/// An empty `CLOUDTKEFILES` is refused by every command, before anything is created: the
/// per-user default would be another fleet than the one the operator meant.
#[test]
fn empty_cloudtkefiles_is_refused() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let home = w.path().join("home");
    for (name, args) in [
        ("empty_cloudtkefiles_auto_init", &["auto-init"][..]),
        ("empty_cloudtkefiles_sigkeys", &["sigkeys"][..]),
    ] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_tke"))
            .args(args)
            .env("CLOUDTKEFILES", "")
            .env("HOME", &home)
            .env_remove("XDG_DATA_HOME")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        common::snap::assert_run(name, &o, 1, &[(&home, "[HOME]")]);
    }
    assert!(!home.exists(), "the per-user default directory was created");
}

#[test]
fn secrets_file_errors() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let missing = w.path().join("no-such-secrets.toml");
    w.check(
        "secrets_missing",
        &["--secrets", missing.to_str().unwrap(), "sigkeys"],
        1,
        &[],
    );
    let open = w.secrets(PW);
    fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
    w.check(
        "secrets_readable_by_others",
        &["--secrets", open.to_str().unwrap(), "sigkeys"],
        1,
        &[],
    );
    // The TOML error would quote the line, password included: only its position is shown.
    let bad = private_file(&w, "bad.toml", "alice = \"secret-pw-in-a-broken-line\n");
    w.check("secrets_not_toml", &["--secrets", &bad, "sigkeys"], 1, &[]);
    let number = private_file(&w, "number.toml", "alice = 1234\n");
    w.check(
        "secrets_value_not_a_string",
        &["--secrets", &number, "sigkeys"],
        1,
        &[],
    );
}

#[test]
fn without_a_terminal_the_error_names_the_flag() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init", "--instances", "2"]);
    let s = w.secrets(PW);
    let s = s.to_str().unwrap();
    w.ok(&["--secrets", s, "sigkey-add", "--name", "alice"]);
    let auto_init = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["auto-init", "--instance", "1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("no_terminal_cryptounit_add", vec!["cryptounit-add".into()]),
        ("no_terminal_cryptounit_rm", vec!["cryptounit-rm".into()]),
        ("no_terminal_sigkey_add_name", vec!["sigkey-add".into()]),
        (
            "no_terminal_sigkey_add_password",
            ["sigkey-add", "--name", "carol"].map(String::from).to_vec(),
        ),
        ("no_terminal_sigkey_sel", vec!["sigkey-sel".into()]),
        ("no_terminal_sigkey_rm", vec!["sigkey-rm".into()]),
        (
            "no_terminal_sigkey_rm_confirmation",
            ["sigkey-rm", "1"].map(String::from).to_vec(),
        ),
        ("no_terminal_auto_init_instance", vec!["auto-init".into()]),
        ("no_terminal_auto_init_sig_threshold", auto_init(&[])),
        (
            "no_terminal_auto_init_rev_threshold",
            auto_init(&["--sig-threshold", "1"]),
        ),
        ("no_terminal_auto_init_admins", auto_init(&T11)),
        (
            "no_terminal_auto_init_confirmation",
            auto_init(&[&T11[..], &["--admin", "alice"]].concat()),
        ),
        (
            "no_terminal_auto_init_key_password",
            auto_init(&[&T11[..], &["--admin", "alice", "--yes"]].concat()),
        ),
        (
            "no_terminal_auto_init_new_key_password",
            auto_init(&[&T11[..], &["--new-admin", "dora", "--yes"]].concat()),
        ),
    ];
    let before = w.snapshot();
    for (name, args) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        w.check(name, &args, 1, &[]);
    }
    assert_eq!(before, w.snapshot(), "a refused command changed files");
    w.ok(&["cryptounit-add", "1"]);
    w.check(
        "no_terminal_zeroize_confirmation",
        &["cryptounit-zeroize"],
        1,
        &[],
    );
}

#[test]
fn numbers_that_do_not_exist_and_empty_selections() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    // No command but `local init` creates a fleet: without one, each says how to make it
    // and creates nothing.
    w.check("no_fleet_cryptounits", &["cryptounits"], 1, &[]);
    w.check("no_fleet_cryptounit_add", &["cryptounit-add", "1"], 1, &[]);
    assert!(!w.path().join("local").exists());
    w.ok(&["local", "init"]);
    w.check("nothing_selected_compare", &["cryptounit-compare"], 1, &[]);
    w.check(
        "nothing_selected_zeroize",
        &["cryptounit-zeroize", "--yes"],
        1,
        &[],
    );
    w.check("unit_num_too_large", &["cryptounit-add", "2", "9"], 1, &[]);
    w.check("unit_num_zero", &["cryptounit-rm", "0"], 1, &[]);
    w.check("no_signature_keys_sel", &["sigkey-sel", "1"], 1, &[]);
    w.check("no_signature_keys_rm", &["sigkey-rm", "1", "--yes"], 1, &[]);
    let s = w.secrets(PW);
    w.ok(&[
        "--secrets",
        s.to_str().unwrap(),
        "sigkey-add",
        "--name",
        "alice",
    ]);
    w.check("keynum_too_large_sel", &["sigkey-sel", "3"], 1, &[]);
    w.check("keynum_too_large_rm", &["sigkey-rm", "0", "--yes"], 1, &[]);
}

#[test]
fn local_init_errors() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init"]);
    w.check("local_init_twice", &["local", "init"], 1, &[]);
    let fresh = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let spec_cases: &[(&str, &[&str])] = &[
        (
            "local_init_more_failover_than_operational",
            &["--failover", "3", "--operational", "2"],
        ),
        ("local_init_no_instance", &["--instances", "0"]),
        ("local_init_too_many_instances", &["--instances", "17"]),
        ("local_init_too_many_operational", &["--operational", "7"]),
        ("local_init_too_many_recovery", &["--recovery", "3"]),
    ];
    let pin = private_file(&fresh, "token.pin", "1234");
    let module_cases: &[(&str, &[&str])] = &[
        (
            "local_init_token_count",
            &[
                "--operational",
                "1",
                "--recovery",
                "1",
                "--pkcs11-module",
                "/nonexistent/libnone.so",
                "--pkcs11-tokens",
                "a",
                "--pkcs11-pin-file",
                &pin,
            ],
        ),
        (
            "local_init_token_twice",
            &[
                "--operational",
                "1",
                "--recovery",
                "1",
                "--pkcs11-module",
                "/nonexistent/libnone.so",
                "--pkcs11-tokens",
                "a,a",
                "--pkcs11-pin-file",
                &pin,
            ],
        ),
        (
            "local_init_token_label_too_long",
            &[
                "--operational",
                "1",
                "--recovery",
                "0",
                "--pkcs11-module",
                "/nonexistent/libnone.so",
                "--pkcs11-tokens",
                "a-token-label-of-thirty-three-chr",
                "--pkcs11-pin-file",
                &pin,
            ],
        ),
        (
            "local_init_module_missing",
            &[
                "--operational",
                "1",
                "--recovery",
                "0",
                "--pkcs11-module",
                "/nonexistent/libnone.so",
                "--pkcs11-tokens",
                "a",
                "--pkcs11-pin-file",
                &pin,
            ],
        ),
    ];
    for (name, extra) in spec_cases.iter().chain(module_cases) {
        let args = [&["local", "init"][..], extra].concat();
        fresh.check(name, &args, 1, &[]);
    }
    for (name, ms) in [
        ("local_init_latency_too_large", "10001"),
        ("local_init_latency_not_a_number", "20ms"),
    ] {
        fresh.check(name, &["local", "init", "--latency-ms", ms], 2, &[]);
    }
    assert!(!fresh.path().join("local").exists());

    // A valid latency is recorded with the fleet, which then works as usual.
    let out = fresh.ok(&["local", "init", "--latency-ms", "5"]);
    assert!(out.contains("waits 5 ms before answering"), "{out}");
    let fleet = std::fs::read_to_string(fresh.path().join("local/fleet.json")).unwrap();
    assert!(fleet.contains("\"latency_ms\": 5"), "{fleet}");
    fresh.ok(&["cryptounits"]);
}

#[test]
fn sigkey_add_errors() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let s = w.secrets(&[("alice", "alice-password-1"), ("tokadmin", "1234")]);
    let s = s.to_str().unwrap();
    fn with<'a>(s: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        [&["--secrets", s, "sigkey-add"][..], extra].concat()
    }
    let add = |extra: &[&'static str]| with(s, extra);
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "sigkey_add_name_too_long",
            add(&["--name", "abcdefghijklmnopqrstuvwxyz01234"]),
        ),
        ("sigkey_add_name_empty", add(&["--name", ""])),
        ("sigkey_add_name_leading_space", add(&["--name", " alice"])),
        (
            "sigkey_add_name_zero_width",
            add(&["--name", "ali\u{200b}ce"]),
        ),
        (
            "sigkey_add_name_bidi_override",
            add(&["--name", "\u{202e}ecila"]),
        ),
        (
            "sigkey_add_name_no_break_space",
            add(&["--name", "ali\u{a0}ce"]),
        ),
        (
            "sigkey_add_name_escape",
            add(&["--name", "ali\u{1b}[2Jce"]),
        ),
        (
            "sigkey_add_pkcs11_not_a_uri",
            add(&["--pkcs11", "token=a;object=b", "--name", "tokadmin"]),
        ),
        (
            "sigkey_add_pkcs11_no_object",
            add(&[
                "--pkcs11",
                "pkcs11:token=a?module-path=/nonexistent/libnone.so",
                "--name",
                "tokadmin",
            ]),
        ),
        (
            "sigkey_add_pkcs11_pin_value",
            add(&[
                "--pkcs11",
                "pkcs11:token=a;object=b?module-path=/nonexistent/libnone.so&pin-value=1234",
                "--name",
                "tokadmin",
            ]),
        ),
        (
            "sigkey_add_pkcs11_module_missing",
            add(&[
                "--pkcs11",
                "pkcs11:token=a;object=b?module-path=/nonexistent/libnone.so",
                "--name",
                "tokadmin",
            ]),
        ),
        (
            "sigkey_add_pkcs11_pin_source_missing",
            vec![
                "sigkey-add",
                "--pkcs11",
                "pkcs11:token=a;object=b?module-path=/nonexistent/libnone.so&pin-source=file:/nonexistent/token.pin",
                "--name",
                "tokadmin",
            ],
        ),
    ];
    for (name, args) in &cases {
        w.check(name, args, 1, &[]);
    }
    assert_eq!(
        w.snapshot().len(),
        1,
        "only the secrets file is in the workstation"
    );
}

/// A name that is, or looks like, the name of a key on the workstation is refused before
/// any key is made: `--admin NAME` could not select the second one.
#[test]
fn sigkey_add_refuses_a_taken_or_lookalike_name() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    // The look-alikes are refused before any password is needed.
    let s = w.secrets(&[("alice", "alice-password-1")]);
    let s = s.to_str().unwrap();
    w.ok(&["--secrets", s, "sigkey-add", "--name", "alice"]);
    let before = w.snapshot();
    w.check(
        "sigkey_add_name_lookalike_case",
        &["--secrets", s, "sigkey-add", "--name", "Alice"],
        1,
        &[],
    );
    w.check(
        "sigkey_add_name_lookalike_cyrillic",
        &["--secrets", s, "sigkey-add", "--name", "\u{430}lice"],
        1,
        &[],
    );
    w.check(
        "sigkey_add_name_taken",
        &["--secrets", s, "sigkey-add", "--name", "alice"],
        1,
        &[],
    );
    assert_eq!(w.snapshot(), before, "nothing was written");
}

#[test]
fn auto_init_refusals() {
    let (w, s) = with_keys();
    let run = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["--secrets", &s, "auto-init"]
            .iter()
            .map(|a| a.to_string())
            .collect();
        v.extend(extra.iter().map(|a| a.to_string()));
        v
    };
    let nine: Vec<&str> = (1..=9)
        .flat_map(|i| {
            [
                "--new-admin",
                ["a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9"][i - 1],
            ]
        })
        .collect();
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "auto_init_sig_threshold_zero",
            run(&[
                "--sig-threshold",
                "0",
                "--rev-threshold",
                "1",
                "--admin",
                "alice",
            ]),
        ),
        (
            "auto_init_sig_threshold_nine",
            run(&[
                "--sig-threshold",
                "9",
                "--rev-threshold",
                "1",
                "--admin",
                "alice",
            ]),
        ),
        (
            "auto_init_rev_threshold_nine",
            run(&[
                "--sig-threshold",
                "1",
                "--rev-threshold",
                "9",
                "--admin",
                "alice",
            ]),
        ),
        (
            "auto_init_too_many_admins",
            run(&[&T11[..], &nine].concat()),
        ),
        (
            "auto_init_too_few_admins",
            run(&[
                "--sig-threshold",
                "2",
                "--rev-threshold",
                "2",
                "--admin",
                "alice",
            ]),
        ),
        (
            "auto_init_instance_does_not_exist",
            run(&[&["--instance", "3"][..], &T11, &["--admin", "alice"]].concat()),
        ),
        (
            "auto_init_unknown_admin",
            run(&[&T11[..], &["--admin", "zed"]].concat()),
        ),
        (
            "auto_init_new_admin_exists",
            run(&[&T11[..], &["--new-admin", "alice"]].concat()),
        ),
        (
            "auto_init_new_admin_twice",
            run(&[&T11[..], &["--new-admin", "dora", "--new-admin", "dora"]].concat()),
        ),
        (
            "auto_init_new_admin_lookalike",
            run(&[&T11[..], &["--new-admin", "dora", "--new-admin", "DORA"]].concat()),
        ),
        (
            "auto_init_new_admin_invalid_name",
            run(&[
                &T11[..],
                &["--new-admin", "abcdefghijklmnopqrstuvwxyz01234"],
            ]
            .concat()),
        ),
    ];
    let before = w.snapshot();
    for (name, args) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        w.check(name, &args, 1, &[]);
    }
    assert_eq!(before, w.snapshot(), "a refused auto-init changed files");

    // A successful run, then a second one: the units are no longer in imprint mode.
    let ok = auto_init_as(&s, "alice", &["--yes"]);
    w.check("ok_auto_init", &ok, 0, &[]);
    w.check("auto_init_not_in_imprint_mode", &ok, 1, &[]);
}

#[test]
fn wrong_password_and_damaged_or_missing_key_files() {
    let (w, _) = with_keys();
    let wrong = private_file(
        &w,
        "wrong.toml",
        "alice = \"not-the-password\"\nbob = \"x\"\n",
    );
    let check = |name: &str, secrets: &str, admin: &str| {
        w.check(name, &auto_init_as(secrets, admin, &["--yes"]), 1, &[]);
    };
    check("wrong_password", &wrong, "alice");

    // Alice's key file altered: the last byte of the next-to-last AES-CBC block of its
    // encrypted data (the end of the DER) is flipped, which breaks the padding of the
    // last block whatever the random salt and IV.
    let good = w.secrets(PW);
    let good = good.to_str().unwrap();
    let alice = key_file(&w, "alice");
    let pem = fs::read_to_string(&alice).unwrap();
    let (label, mut der) = der::pem::decode_vec(pem.as_bytes()).unwrap();
    let n = der.len();
    der[n - 17] ^= 0x80;
    let altered = der::pem::encode_string(label, der::pem::LineEnding::LF, &der).unwrap();
    fs::write(&alice, altered).unwrap();
    check("key_file_altered", good, "alice");
    // Edited so that it is no longer a key file.
    fs::write(&alice, pem.replacen("MI", "XX", 1)).unwrap();
    check("key_file_malformed", good, "alice");
    // Truncated to nothing.
    fs::write(&alice, "").unwrap();
    check("key_file_empty", good, "alice");
    // The listing shows the damaged file and fails.
    w.check("sigkeys_key_file_damaged", &["sigkeys"], 1, &[]);
    fs::write(&alice, &pem).unwrap();

    // Bob's key file gone: the listing names the orphan certificate as damaged and fails,
    // and the key cannot be named.
    fs::remove_file(key_file(&w, "bob")).unwrap();
    w.check("sigkeys_key_file_missing", &["sigkeys"], 1, &[]);
    check("key_file_missing", good, "bob");
    // A certificate gone: the key file is damaged in the same way.
    fs::remove_file(cert_file(&w, "alice")).unwrap();
    check("cert_file_missing", good, "alice");
}

/// `sigkey-add` refuses a taken name, but key files copied from another workstation (or
/// made by an older `tke`) can still share one: `--admin` refuses to guess.
#[test]
fn several_keys_of_one_name() {
    let (w, s) = with_keys();
    let other = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    other.ok(&["--secrets", &s, "sigkey-add", "--name", "alice"]);
    for e in fs::read_dir(other.path()).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().starts_with("alice-") {
            fs::copy(e.path(), w.path().join(e.file_name())).unwrap();
        }
    }
    let keys: serde_json::Value =
        serde_json::from_str(&w.ok(&["sigkeys", "--output", "json"])).unwrap();
    let alices = keys
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["name"] == "alice");
    assert_eq!(alices.count(), 2, "{keys}");
    w.check(
        "auto_init_admin_name_ambiguous",
        &auto_init_as(&s, "alice", &["--yes"]),
        1,
        &[],
    );
}

#[test]
fn zeroize_refusals() {
    let (w, s) = with_keys();
    w.ok(&auto_init_as(&s, "alice", &["--yes"]));
    w.check(
        "zeroize_unknown_admin",
        &[
            "--secrets",
            &s,
            "cryptounit-zeroize",
            "--admin",
            "zed",
            "--yes",
        ],
        1,
        &[],
    );
    let wrong = private_file(&w, "wrong.toml", "alice = \"not-the-password\"\n");
    w.check(
        "zeroize_wrong_password",
        &["--secrets", &wrong, "cryptounit-zeroize", "--yes"],
        1,
        &[],
    );
    // Bob is on the workstation but not installed on the units.
    w.check(
        "zeroize_admin_not_installed",
        &[
            "--secrets",
            &s,
            "cryptounit-zeroize",
            "--admin",
            "bob",
            "--yes",
        ],
        1,
        &[],
    );
    // Without alice's key no key on the workstation may sign for the units.
    w.ok(&["sigkey-rm", "1", "--yes"]);
    w.check(
        "zeroize_no_usable_key",
        &["--secrets", &s, "cryptounit-zeroize", "--yes"],
        1,
        &[],
    );
}

/// A recovery unit's zeroize needs its signature threshold: one administrator's key is
/// refused before anything changes; two sign.
#[test]
fn zeroize_recovery_needs_the_threshold() {
    let (w, s) = with_keys();
    let t21 = ["--sig-threshold", "2", "--rev-threshold", "1"];
    let admins = ["--admin", "alice", "--admin", "bob", "--yes"];
    w.ok(&[&["--secrets", &s, "auto-init"][..], &t21, &admins].concat());
    let before = w.compare_json();
    w.check(
        "zeroize_recovery_one_key",
        &[
            "--secrets",
            &s,
            "cryptounit-zeroize",
            "--admin",
            "alice",
            "--yes",
        ],
        1,
        &[],
    );
    assert_eq!(w.compare_json(), before, "a refused zeroize changed a unit");
    let out = w.ok(&[
        "--secrets",
        &s,
        "cryptounit-zeroize",
        "--signer",
        "alice",
        "--admin",
        "bob",
        "--yes",
    ]);
    // Operational units signed by alice alone, recovery units by both (`--admin` is
    // `--signer` under its first name).
    let signed_by = |who: &str| {
        out.lines()
            .filter(|l| !l.starts_with("Signed by:") && l.ends_with(who))
            .count()
    };
    assert_eq!(
        (signed_by(" alice"), signed_by(" alice, bob")),
        (2, 2),
        "{out}"
    );
    assert!(out.contains("\nSigned by: alice, bob\nOK\n"), "{out}");
    for u in w.compare_json().as_array().unwrap() {
        assert_eq!(u["imprint_mode"], true, "{u}");
    }
}

#[test]
fn a_key_on_a_token_that_cannot_be_opened() {
    let (w, s) = with_keys();
    // Alice's key recorded as a key on a PKCS#11 token whose module is not installed.
    let key = key_file(&w, "alice");
    let stem = key.file_name().unwrap().to_str().unwrap();
    let reference = stem.replace(".key.pem", ".ref.toml");
    fs::remove_file(&key).unwrap();
    let uri = "pkcs11:token=admins;object=alice?module-path=/nonexistent/libnone.so";
    private_file(
        &w,
        &reference,
        &format!("kind = \"pkcs11\"\nuri = \"{uri}\"\n"),
    );
    w.check(
        "token_key_module_missing",
        &auto_init_as(&s, "alice", &["--yes"]),
        1,
        &[],
    );
    // Its PIN from a pin-source file that is not there (and not in --secrets).
    private_file(
        &w,
        &reference,
        &format!("kind = \"pkcs11\"\nuri = \"{uri}&pin-source=file:/nonexistent/alice.pin\"\n"),
    );
    let no_secrets = [&["auto-init"][..], &T11, &["--admin", "alice", "--yes"]].concat();
    w.check("token_key_pin_source_missing", &no_secrets, 1, &[]);
}

#[test]
fn declining_a_confirmation_exits_3_and_changes_nothing() {
    let (w, s) = with_keys();
    let auto_init = auto_init_as(&s, "alice", &[]);
    let yes_no = |answer| [("> ", Line(answer))];
    check_terminal(&w, "cancelled_auto_init", &auto_init, &yes_no("n"), 3);
    check_terminal(
        &w,
        "cancelled_sigkey_rm",
        &["sigkey-rm", "2"],
        &yes_no("no"),
        3,
    );
    w.ok(&["cryptounit-add", "1", "2"]);
    check_terminal(
        &w,
        "cancelled_zeroize",
        &["cryptounit-zeroize"],
        &yes_no(""),
        3,
    );
    // End of input instead of an answer is a failure, not a cancellation.
    check_terminal(
        &w,
        "stdin_closed_at_a_question",
        &["cryptounit-add"],
        &[("> ", End)],
        1,
    );
}

#[test]
fn prompts_explain_a_bad_answer_and_ask_again() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init", "--instances", "2"]);
    let s = w.secrets(PW);
    let s = s.to_str().unwrap();
    for (name, _) in PW {
        w.ok(&["--secrets", s, "sigkey-add", "--name", name]);
    }
    check_terminal(
        &w,
        "prompt_bad_crypto_unit_nums",
        &["cryptounit-add"],
        &[
            ("> ", Line("one")),
            ("> ", Line("9")),
            ("> ", Line("")),
            ("> ", End),
        ],
        1,
    );
    check_terminal(
        &w,
        "prompt_bad_keynums",
        &["sigkey-sel"],
        &[("> ", Line("0")), ("> ", Line(" ")), ("> ", End)],
        1,
    );
    check_terminal(
        &w,
        "prompt_bad_auto_init_answers",
        &["--secrets", s, "auto-init"],
        &[
            // The instance.
            ("> ", Line("x")),
            ("> ", Line("1 2")),
            ("> ", Line("1")),
            // The thresholds.
            ("> ", Line("x")),
            ("> ", Line("9")),
            ("> ", Line("1")),
            ("> ", Line("1")),
            // How many administrators.
            ("> ", Line("x")),
            ("> ", Line("9")),
            ("> ", Line("1")),
            // Which existing keys.
            ("> ", Line("1 2")),
            ("> ", Line("3")),
            ("> ", End),
        ],
        1,
    );
    // A name for a new key that is taken, repeated or a look-alike is asked again; the
    // names given so far are kept (the second question is still "2 of 2").
    check_terminal(
        &w,
        "prompt_bad_new_admin_names",
        &["--secrets", s, "auto-init"],
        &[
            ("> ", Line("1")),
            ("> ", Line("1")),
            ("> ", Line("1")),
            ("> ", Line("2")),
            // No existing key.
            ("> ", Line("")),
            // The new names.
            ("> ", Line("alice")),
            ("> ", Line("dora")),
            ("> ", Line("dora")),
            ("> ", Line("Dora")),
            ("> ", Line("erin")),
            // The confirmation.
            ("> ", End),
        ],
        1,
    );
}

#[test]
fn passwords_on_a_terminal() {
    let (w, _) = with_keys();
    // A wrong password is explained and asked again, three times in all.
    let open = [&["auto-init"][..], &T11, &["--admin", "alice", "--yes"]].concat();
    check_terminal(
        &w,
        "prompt_wrong_password_three_times",
        &open,
        &[
            ("> ", Hidden("wrong-1")),
            ("> ", Hidden("wrong-2")),
            ("> ", Hidden("wrong-3")),
        ],
        1,
    );
    // A new password must not be empty and is entered twice.
    check_terminal(
        &w,
        "prompt_new_password",
        &["sigkey-add", "--name", "carol"],
        &[
            ("> ", Hidden("")),
            ("> ", Hidden("carol-password-1")),
            ("> ", Hidden("carol-password-2")),
            ("> ", End),
        ],
        1,
    );
    // A weak one (too short, then a common one) is explained and needs a confirmation;
    // declined, the password is asked again.
    check_terminal(
        &w,
        "prompt_weak_new_password",
        &["sigkey-add", "--name", "carol"],
        &[
            ("> ", Hidden("short")),
            ("> ", Hidden("short")),
            ("> ", Line("n")),
            ("> ", Hidden("Password1234")),
            ("> ", Hidden("Password1234")),
            ("> ", End),
        ],
        1,
    );
    // From a secrets file (a script), a weak password is taken with a warning.
    let weak = private_file(&w, "weak.toml", "dave = \"dave\"\n");
    let o = w.run(&["--secrets", &weak, "sigkey-add", "--name", "dave"]);
    assert!(o.status.success(), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        err,
        "Warning: the password for the new signature key of dave in the secrets file is \
         weak: it is shorter than 12 characters.\n"
    );
}
