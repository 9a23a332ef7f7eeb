//! Administrator keys on a PKCS#11 token (SoftHSM2 through its real module) through the
//! real `tke` binary: `sigkey-add --pkcs11`, `sigkeys`, `sigkey-rm`, and an `auto-init`
//! with one file key and one token key. Each test makes its own token directory (the
//! `tke-test-support` fixture) and gives `tke` its `SOFTHSM2_CONF`; this process never
//! loads the module. SoftHSM2 and OpenSC are required (ci/setup.sh): never skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    process::{Command, Output},
};

use common::{snap, Workstation};
use rexpect::session::spawn_command;
use serde_json::Value;
use tke_test_support::{softhsm::module_text, Tokens};

fn run(w: &Workstation, t: &Tokens, args: &[&str]) -> Output {
    w.tke()
        .env("SOFTHSM2_CONF", t.conf())
        .args(args)
        .output()
        .unwrap()
}

fn ok(w: &Workstation, t: &Tokens, args: &[&str]) -> String {
    let o = run(w, t, args);
    assert!(
        o.status.success(),
        "tke {args:?} failed: {}\nstdout:\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Runs `tke`, asserts its exit code and the snapshot `name` of what it showed (the token
/// directory shows as `[TOKENS]`); returns stderr.
fn fails(w: &Workstation, t: &Tokens, name: &str, args: &[&str], code: i32) -> String {
    let o = run(w, t, args);
    common::assert_failed(&o, code, args);
    snap::assert_run(name, &o, code, &[(w.path(), "[WS]"), (t.dir(), "[TOKENS]")]);
    String::from_utf8(o.stderr).unwrap()
}

fn sigkeys_json(w: &Workstation, t: &Tokens) -> Vec<Value> {
    let v: Value = serde_json::from_str(&ok(w, t, &["sigkeys", "--output", "json"])).unwrap();
    v.as_array().unwrap().clone()
}

/// No file of the workstation holds `secret`.
fn assert_nowhere(w: &Workstation, secret: &str) {
    for (path, bytes) in w.snapshot() {
        assert!(
            !String::from_utf8_lossy(&bytes).contains(secret) || path.ends_with("secrets.toml"),
            "{} holds a secret",
            path.display()
        );
    }
}

#[test]
fn sigkey_add_pkcs11_generates_on_the_token_and_records_only_the_uri() {
    let t = Tokens::temp(&["admins"]);
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let pin = t.pin("admins");
    let s = w.secrets(&[("tokadmin", &pin), ("tokadmin2", &pin)]);
    let s = s.to_str().unwrap();
    let uri = t.uri("admins", "tokadmin");
    let out = ok(
        &w,
        &t,
        &[
            "--secrets",
            s,
            "sigkey-add",
            "--pkcs11",
            &uri,
            "--name",
            "tokadmin",
        ],
    );
    assert!(
        out.contains("generated on token \"admins\" (serial "),
        "{out}"
    );
    assert!(out.contains("pkcs11") && out.contains("OK"), "{out}");

    let keys = sigkeys_json(&w, &t);
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["name"], "tokadmin");
    assert_eq!(keys[0]["kind"], "pkcs11");
    let recorded = keys[0]["uri"].as_str().unwrap();
    assert!(
        recorded.starts_with("pkcs11:token=admins;object=tokadmin;id=%")
            && recorded.ends_with(&format!("?module-path={}", module_text())),
        "{recorded}"
    );
    let table = ok(&w, &t, &["sigkeys"]);
    let row = table.lines().find(|l| l.contains("tokadmin")).unwrap();
    assert!(row.contains("pkcs11"), "{table}");

    // The workstation holds a reference, a certificate and the creation record, 0600,
    // and no PIN.
    let mut names: Vec<String> = fs::read_dir(w.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("tokadmin-"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(
        names[0].ends_with(".created")
            && names[1].ends_with(".crt.pem")
            && names[2].ends_with(".ref.toml"),
        "{names:?}"
    );
    for n in &names {
        let mode = fs::metadata(w.path().join(n)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{n}");
    }
    assert_nowhere(&w, &pin);

    // The key is on the token, as OpenSC sees it.
    let objects = t.pkcs11_tool_ok(&[
        "--token-label",
        "admins",
        "--login",
        "--pin",
        &pin,
        "--list-objects",
    ]);
    assert!(
        objects.contains("Private Key Object; EC") && objects.contains("tokadmin"),
        "{objects}"
    );

    // Adding the same key again, under another name (the same name is refused first as
    // taken), registers nothing new and changes nothing.
    let before = w.snapshot();
    let err = fails(
        &w,
        &t,
        "pkcs11_key_already_recorded",
        &[
            "--secrets",
            s,
            "sigkey-add",
            "--pkcs11",
            &uri,
            "--name",
            "tokadmin2",
        ],
        1,
    );
    assert!(err.contains("already recorded"), "{err}");
    assert_eq!(before, w.snapshot());
}

#[test]
fn sigkey_add_pkcs11_registers_a_key_pair_made_by_pkcs11_tool_after_saying_so() {
    let t = Tokens::temp(&["T"]);
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let pin = t.pin("T");
    t.pkcs11_tool_ok(&[
        "--token-label",
        "T",
        "--login",
        "--pin",
        &pin,
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--label",
        "bob",
    ]);
    // The PIN from the URI's pin-source this time.
    let uri = format!(
        "{}&pin-source=file:{}",
        t.uri("T", "bob"),
        t.dir().join("T.pin").display()
    );
    let out = ok(&w, &t, &["sigkey-add", "--pkcs11", &uri, "--name", "bob"]);
    let notice = out
        .find("is already on token \"T\"")
        .unwrap_or_else(|| panic!("{out}"));
    assert!(out.contains("No new key is generated"), "{out}");
    let done = out
        .find("registered on token \"T\"")
        .unwrap_or_else(|| panic!("{out}"));
    assert!(notice < done, "{out}");
    let keys = sigkeys_json(&w, &t);
    assert_eq!(keys[0]["kind"], "pkcs11");
    assert!(
        keys[0]["uri"]
            .as_str()
            .unwrap()
            .contains("pin-source=file:"),
        "{keys:?}"
    );
    // Still exactly one private key on the token.
    let objects = t.pkcs11_tool_ok(&[
        "--token-label",
        "T",
        "--login",
        "--pin",
        &pin,
        "--list-objects",
    ]);
    assert_eq!(
        objects.matches("Private Key Object").count(),
        1,
        "{objects}"
    );
}

#[test]
fn auto_init_with_one_file_key_and_one_token_key() {
    let t = Tokens::temp(&["admins"]);
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&[
        "local",
        "init",
        "--operational",
        "2",
        "--recovery",
        "2",
        "--failover",
        "2",
    ]);
    let pin = t.pin("admins");
    let s = w.secrets(&[("fileadmin", "file-admin-pw-1"), ("tokadmin", &pin)]);
    let s = s.to_str().unwrap();
    ok(
        &w,
        &t,
        &["--secrets", s, "sigkey-add", "--name", "fileadmin"],
    );
    ok(
        &w,
        &t,
        &[
            "--secrets",
            s,
            "sigkey-add",
            "--pkcs11",
            &t.uri("admins", "tokadmin"),
            "--name",
            "tokadmin",
        ],
    );
    let kinds: Vec<(String, String)> = sigkeys_json(&w, &t)
        .iter()
        .map(|k| {
            (
                k["name"].as_str().unwrap().to_owned(),
                k["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("fileadmin".into(), "file".into()),
            ("tokadmin".into(), "pkcs11".into())
        ]
    );

    let out = ok(
        &w,
        &t,
        &[
            "--secrets",
            s,
            "auto-init",
            "--sig-threshold",
            "2",
            "--rev-threshold",
            "2",
            "--admin",
            "fileadmin",
            "--admin",
            "tokadmin",
            "--yes",
        ],
    );
    assert!(
        out.contains("The selected service instance has been initialized."),
        "{out}"
    );

    let units: Value =
        serde_json::from_str(&ok(&w, &t, &["cryptounit-compare", "--output", "json"])).unwrap();
    let units = units.as_array().unwrap();
    assert_eq!(units.len(), 6);
    let vp = units[0]["current_mk"]["vp"].as_str().unwrap().to_owned();
    for u in units {
        let mut names: Vec<&str> = u["admins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["fileadmin", "tokadmin"], "{u}");
        assert_eq!(u["imprint_mode"], Value::Bool(false));
        assert_eq!(u["sig_threshold"], 2);
        assert_eq!(u["rev_threshold"], 2);
        assert_eq!(u["current_mk"]["state"], "valid", "{u}");
        assert_eq!(u["current_mk"]["vp"], Value::String(vp.clone()));
    }
    assert_nowhere(&w, &pin);
}

#[test]
fn a_wrong_pin_fails_clearly_and_changes_nothing() {
    let t = Tokens::temp(&["admins"]);
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let s = w.secrets(&[("tokadmin", "987654-wrong")]);
    let s = s.to_str().unwrap();
    let before = w.snapshot();
    let err = fails(
        &w,
        &t,
        "pkcs11_wrong_pin_at_sigkey_add",
        &[
            "--secrets",
            s,
            "sigkey-add",
            "--pkcs11",
            &t.uri("admins", "tokadmin"),
            "--name",
            "tokadmin",
        ],
        1,
    );
    assert!(
        err.contains("wrong PIN for token \"admins\" (serial "),
        "{err}"
    );
    assert!(err.contains(module_text()), "{err}");
    assert!(!err.contains("987654-wrong"), "{err}");
    assert_eq!(before, w.snapshot());

    // A key recorded earlier, opened for auto-init with a wrong PIN.
    let good = w.secrets(&[("tokadmin", &t.pin("admins")), ("fileadmin", "file-pw-123")]);
    let good = good.to_str().unwrap().to_owned();
    ok(
        &w,
        &t,
        &[
            "--secrets",
            &good,
            "sigkey-add",
            "--pkcs11",
            &t.uri("admins", "tokadmin"),
            "--name",
            "tokadmin",
        ],
    );
    ok(
        &w,
        &t,
        &["--secrets", &good, "sigkey-add", "--name", "fileadmin"],
    );
    w.ok(&["local", "init"]);
    let bad = w.secrets(&[("tokadmin", "987654-wrong"), ("fileadmin", "file-pw-123")]);
    let before = w.snapshot();
    let err = fails(
        &w,
        &t,
        "pkcs11_wrong_pin_at_auto_init",
        &[
            "--secrets",
            bad.to_str().unwrap(),
            "auto-init",
            "--sig-threshold",
            "2",
            "--rev-threshold",
            "2",
            "--admin",
            "fileadmin",
            "--admin",
            "tokadmin",
            "--yes",
        ],
        1,
    );
    assert!(
        err.contains("cannot open the signature key of tokadmin on its PKCS#11 token"),
        "{err}"
    );
    assert!(err.contains("wrong PIN"), "{err}");
    assert!(!err.contains("987654-wrong"), "{err}");
    // No unit and no file changed.
    assert_eq!(before, w.snapshot());
}

#[test]
fn bad_uris_are_refused_before_anything_is_written() {
    let t = Tokens::temp(&["admins"]);
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let s = w.secrets(&[("tokadmin", &t.pin("admins"))]);
    let s = s.to_str().unwrap();
    let before = w.snapshot();
    let cases = [
        (
            "pkcs11_uri_pin_value",
            format!("{}&pin-value=777999", t.uri("admins", "tokadmin")),
            "pin-value",
        ),
        (
            "pkcs11_uri_module_missing",
            "pkcs11:token=admins;object=k?module-path=/nonexistent/lib.so".to_owned(),
            "cannot load the PKCS#11 module /nonexistent/lib.so",
        ),
        (
            "pkcs11_uri_token_not_found",
            t.uri("nosuch", "k"),
            "token \"nosuch\" was not found",
        ),
        (
            "pkcs11_uri_no_key",
            format!("pkcs11:token=admins?module-path={}", module_text()),
            "names no key",
        ),
        (
            "pkcs11_uri_slot_id",
            "pkcs11:slot-id=1;object=k".to_owned(),
            "never by slot number",
        ),
    ];
    for (name, uri, want) in &cases {
        let err = fails(
            &w,
            &t,
            name,
            &[
                "--secrets",
                s,
                "sigkey-add",
                "--pkcs11",
                uri,
                "--name",
                "tokadmin",
            ],
            1,
        );
        assert!(err.contains(want), "{uri}: {err}");
        assert!(!err.contains("777999"), "{err}");
    }
    // A SOFTHSM2_CONF whose token directory is empty: no token at all points at the
    // configuration.
    let empty = tempfile::tempdir().unwrap();
    fs::create_dir(empty.path().join("tokens")).unwrap();
    let conf = fs::read_to_string(t.conf()).unwrap();
    let tokens = t.dir().join("tokens").display().to_string();
    let conf = conf.replace(&tokens, &empty.path().join("tokens").display().to_string());
    fs::write(empty.path().join("softhsm2.conf"), conf).unwrap();
    let none = Tokens::existing(empty.path());
    let err = fails(
        &w,
        &none,
        "pkcs11_uri_no_token_at_all",
        &[
            "--secrets",
            s,
            "sigkey-add",
            "--pkcs11",
            &t.uri("admins", "tokadmin"),
            "--name",
            "tokadmin",
        ],
        1,
    );
    assert!(err.contains("tokens present: none"), "{err}");
    assert!(err.contains("SOFTHSM2_CONF"), "{err}");
    assert_eq!(before, w.snapshot());
}

#[test]
fn the_pin_prompt_names_the_token_and_key_and_rm_leaves_the_token_alone() {
    let t = Tokens::temp(&["admins"]);
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let pin = t.pin("admins");
    let uri = t.uri("admins", "tokadmin");

    let mut c = Command::new(env!("CARGO_BIN_EXE_tke"));
    c.arg("--files-dir").arg(w.path());
    c.args(["sigkey-add", "--pkcs11", &uri, "--name", "tokadmin"]);
    c.env_remove("CLOUDTKEFILES").env("SOFTHSM2_CONF", t.conf());
    let mut p = spawn_command(c, Some(60_000)).unwrap();
    p.exp_string("Enter the user PIN of PKCS#11 token \"admins\" for the signature key of tokadmin (key \"tokadmin\"):")
        .unwrap();
    p.exp_string("> ").unwrap();
    // A wrong PIN is explained, and the PIN asked again.
    p.send_line("not-the-pin").unwrap();
    p.exp_string("wrong PIN for token \"admins\" (serial ")
        .unwrap();
    p.exp_string("Enter the user PIN of PKCS#11 token \"admins\"")
        .unwrap();
    p.exp_string("> ").unwrap();
    p.send_line(&pin).unwrap();
    p.exp_string("generated on token \"admins\"").unwrap();
    p.exp_string("OK").unwrap();
    p.exp_eof().unwrap();

    let mut c = Command::new(env!("CARGO_BIN_EXE_tke"));
    c.arg("--files-dir").arg(w.path()).args(["sigkey-rm", "1"]);
    c.env_remove("CLOUDTKEFILES").env("SOFTHSM2_CONF", t.conf());
    let mut p = spawn_command(c, Some(60_000)).unwrap();
    p.exp_string("Delete the signature key file(s) of tokadmin? The key(s) of tokadmin stay on their PKCS#11 token(s): only their reference and certificate files are deleted from this workstation, and no token is touched. (y/N)")
        .unwrap();
    p.send_line("y").unwrap();
    p.exp_string("The key of tokadmin is still on its PKCS#11 token")
        .unwrap();
    p.exp_string("OK").unwrap();
    p.exp_eof().unwrap();

    assert!(sigkeys_json(&w, &t).is_empty());
    let objects = t.pkcs11_tool_ok(&[
        "--token-label",
        "admins",
        "--login",
        "--pin",
        &pin,
        "--list-objects",
    ]);
    assert!(
        objects.contains("Private Key Object; EC") && objects.contains("tokadmin"),
        "{objects}"
    );
    // And the key on the token registers again.
    let s = w.secrets(&[("tokadmin", &pin)]);
    let out = ok(
        &w,
        &t,
        &[
            "--secrets",
            s.to_str().unwrap(),
            "sigkey-add",
            "--pkcs11",
            &uri,
            "--name",
            "tokadmin",
        ],
    );
    assert!(out.contains("registered on token \"admins\""), "{out}");
}
