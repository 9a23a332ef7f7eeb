//! Crypto units on PKCS#11 tokens (SoftHSM2) through the real `tke` binary: `local init`
//! places them, scripted `auto-init` initializes them, `cryptounit-compare` shows one VP.
//!
//! Each test makes its own token directory (the `tke-test-support` fixture) and hands
//! its `SOFTHSM2_CONF` to the `tke` processes it runs (this process never loads the
//! module). SoftHSM2 missing is a failure naming `ci/setup.sh`, never a skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{fs, path::PathBuf, process::Output};

use common::{snap, Workstation};
use serde_json::Value;
use tke_test_support::softhsm::{self, module_text};

const PW: &[(&str, &str)] = &[
    ("alice", "alice-password-1"),
    ("bob", "bob-password-22"),
    ("carol", "carol-password-333"),
];

/// A private SoftHSM2 token directory with these tokens (the `tke-test-support` fixture),
/// and `tke` run with it.
struct Tokens(softhsm::Tokens);

impl Tokens {
    fn new(w: &Workstation, labels: &[&str]) -> Self {
        Self(softhsm::Tokens::make(&w.path().join("tokens"), labels))
    }

    fn conf(&self) -> PathBuf {
        self.0.conf()
    }

    fn pin_pattern(&self) -> String {
        self.0.pin_pattern()
    }

    /// Runs `tke` with this token directory.
    fn run(&self, w: &Workstation, args: &[&str]) -> Output {
        w.tke()
            .env("SOFTHSM2_CONF", self.conf())
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, w: &Workstation, args: &[&str]) -> String {
        let o = self.run(w, args);
        assert!(
            o.status.success(),
            "tke {args:?} failed: {}\nstdout:\n{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Runs `tke`, asserts its exit code and the snapshot `name` of what it showed (the
    /// token directory shows as `[TOKENS]`); returns stderr.
    fn fails(&self, w: &Workstation, name: &str, args: &[&str], code: i32) -> String {
        let mut o = self.run(w, args);
        common::assert_failed(&o, code, args);
        // SoftHSM lists its tokens in an order of its own (by random directory names).
        o.stderr = String::from_utf8_lossy(&o.stderr)
            .replace("\"good-2\", \"good-1\"", "\"good-1\", \"good-2\"")
            .into_bytes();
        snap::assert_run(
            name,
            &o,
            code,
            &[(self.0.dir(), "[TOKENS]"), (w.path(), "[WS]")],
        );
        String::from_utf8(o.stderr).unwrap()
    }
}

fn init_args<'a>(pin: &'a str, labels: &'a str, units: &'a str) -> Vec<&'a str> {
    vec![
        "--pkcs11-module",
        module_text(),
        "--pkcs11-tokens",
        labels,
        "--pkcs11-pin-file",
        pin,
        "--pkcs11-units",
        units,
    ]
}

/// Scripted auto-init, then every unit holds the same valid master key; returns the
/// compare output.
fn auto_init_leaves_one_vp(w: &Workstation, t: &Tokens, units: usize) -> Vec<Value> {
    let secrets = w.secrets(PW);
    let out = t.ok(
        w,
        &[
            "--secrets",
            secrets.to_str().unwrap(),
            "auto-init",
            "--sig-threshold",
            "2",
            "--rev-threshold",
            "2",
            "--new-admin",
            "alice",
            "--new-admin",
            "bob",
            "--new-admin",
            "carol",
            "--yes",
        ],
    );
    assert!(
        out.contains("The selected service instance has been initialized."),
        "{out}"
    );
    let compare: Value =
        serde_json::from_str(&t.ok(w, &["cryptounit-compare", "--output", "json"])).unwrap();
    let compare = compare.as_array().unwrap().clone();
    assert_eq!(compare.len(), units);
    let vp = compare[0]["current_mk"]["vp"].as_str().unwrap().to_owned();
    assert_eq!(vp.len(), 64);
    for u in &compare {
        assert_eq!(u["current_mk"]["state"], "valid", "{u}");
        assert_eq!(u["current_mk"]["vp"], Value::String(vp.clone()), "{u}");
        assert_eq!(u["new_mk"]["state"], "empty");
        assert_eq!(u["imprint_mode"], Value::Bool(false));
    }
    compare
}

/// The backend recorded in each unit directory, by unit type.
fn backends(w: &Workstation) -> Vec<(String, String)> {
    let units = w.path().join("local").join("units");
    let mut out = Vec::new();
    for e in fs::read_dir(units).unwrap() {
        let state: Value =
            serde_json::from_slice(&fs::read(e.unwrap().path().join("unit.json")).unwrap())
                .unwrap();
        out.push((
            state["unit_type"].as_str().unwrap().to_owned(),
            state["backend"].as_str().unwrap().to_owned(),
        ));
    }
    out.sort();
    out
}

#[test]
fn scripted_auto_init_with_every_unit_on_softhsm2() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let labels = ["op-1", "op-2", "rec-1", "rec-2", "fo-1"];
    let t = Tokens::new(&w, &labels);
    let pin = t.pin_pattern();
    let joined = labels.join(",");
    let mut args = vec![
        "local",
        "init",
        "--operational",
        "2",
        "--recovery",
        "2",
        "--failover",
        "1",
    ];
    args.extend(init_args(&pin, &joined, "all"));
    let out = t.ok(&w, &args);
    assert!(
        out.contains("5 crypto unit(s) keep their secrets on PKCS#11 tokens"),
        "{out}"
    );
    assert!(backends(&w).iter().all(|(_, b)| b == "pkcs11"));
    auto_init_leaves_one_vp(&w, &t, 5);
    // No secret of any unit is in the workstation directory.
    for e in fs::read_dir(w.path().join("local").join("units")).unwrap() {
        let dir = e.unwrap().path();
        assert!(!dir.join("soft-secrets.der").exists());
        assert!(dir.join("pkcs11.json").exists());
    }
}

#[test]
fn mixed_fleet_recovery_soft_operational_on_softhsm2() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let labels = ["op-1", "op-2", "fo-1"];
    let t = Tokens::new(&w, &labels);
    let pin = t.pin_pattern();
    let joined = labels.join(",");
    let mut args = vec![
        "local",
        "init",
        "--operational",
        "2",
        "--recovery",
        "2",
        "--failover",
        "1",
    ];
    args.extend(init_args(&pin, &joined, "operational"));
    t.ok(&w, &args);
    assert_eq!(
        backends(&w),
        [
            ("failover".to_owned(), "pkcs11".to_owned()),
            ("operational".to_owned(), "pkcs11".to_owned()),
            ("operational".to_owned(), "pkcs11".to_owned()),
            ("recovery".to_owned(), "soft".to_owned()),
            ("recovery".to_owned(), "soft".to_owned()),
        ]
    );
    auto_init_leaves_one_vp(&w, &t, 5);
    // New failover units would be soft: refused before anything is asked or added. (The
    // fleet's files are compared; SoftHSM2 rewrites its token files when opened.)
    let fleet = |w: &Workstation| {
        let mut v = w.snapshot();
        v.retain(|(p, _)| p.starts_with(w.path().join("local")));
        v
    };
    let before = fleet(&w);
    t.fails(
        &w,
        "pkcs11_units_failover_enable",
        &["failover-enable", "--total", "2", "--yes"],
        1,
    );
    assert_eq!(before, fleet(&w));
}

#[test]
fn placement_errors_are_clear_and_leave_the_tokens_usable() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let t = Tokens::new(&w, &["good-1", "good-2"]);
    let pin = t.pin_pattern();
    let base = ["local", "init", "--operational", "1", "--recovery", "1"];
    let run = |name: &str, labels: &str, units: &str| {
        let mut args = base.to_vec();
        args.extend(init_args(&pin, labels, units));
        t.fails(&w, name, &args, 1)
    };
    // One label too few: said before anything is made.
    let err = run("pkcs11_units_token_count", "good-1", "all");
    assert!(
        err.contains("names 1 token(s)") && err.contains("places 2"),
        "{err}"
    );
    assert!(!w.path().join("local").exists());
    // A token that does not exist, after one that does: the message names the label and
    // the module, and the unit made on the first token is destroyed.
    let err = run(
        "pkcs11_units_token_not_found",
        "good-1,no-such-token",
        "all",
    );
    assert!(
        err.contains("\"no-such-token\"") && err.contains(module_text()),
        "{err}"
    );
    assert!(
        err.contains("good-1"),
        "the labels present are listed: {err}"
    );
    assert!(!w.path().join("local").exists());
    // A wrong PIN.
    let wrong = w.path().join("wrong.pin");
    fs::write(&wrong, "0000").unwrap();
    fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut args = base.to_vec();
    args.extend(init_args(wrong.to_str().unwrap(), "good-1,good-2", "all"));
    let err = t.fails(&w, "pkcs11_units_wrong_pin", &args, 1);
    assert!(
        err.contains("PIN is incorrect")
            && err.contains("\"good-1\"")
            && err.contains(module_text()),
        "{err}"
    );
    assert!(!err.contains("0000"), "{err}");
    // --pkcs11-tokens without a module is refused by the argument parser.
    let err = w.fails(&["local", "init", "--pkcs11-tokens", "good-1"], 2);
    assert!(err.contains("--pkcs11-module"), "{err}");
    // The tokens were left empty: the same init now succeeds.
    let mut args = base.to_vec();
    args.extend(init_args(&pin, "good-1,good-2", "all"));
    t.ok(&w, &args);
    assert!(backends(&w).iter().all(|(_, b)| b == "pkcs11"));
}
