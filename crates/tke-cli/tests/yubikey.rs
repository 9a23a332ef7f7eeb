//! YubiKey administrators through the real `tke` binary, against virtual YubiKeys served
//! to pcscd through vsmartcard's virtual reader (`tke-piv-vcard`). A missing PC/SC
//! component fails these tests (ci/setup.sh installs them); nothing is skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{path::Path, sync::Arc};

use common::Workstation;
use rexpect::session::spawn_command;
use serde_json::Value;
use tke_client::{Client, ClientError, EmbeddedFleet, Transport};
use tke_piv_vcard::{fixture::Bench, Card, CardConfig, PinPolicy, TouchPolicy};
use tke_proto::{Command, Threshold};
use tke_sigkey::Signer;
use tke_sigkey_file::FileSigner;
use tke_sigkey_yubikey::{NoTouchPrompt, Pin, YubiKeySigner};
use tke_workstation::{FilesDir, Password, SigKeyKind};

const YUKI_PIN: &str = "80417253";

/// A card with a non-default PIN (so that the tests tell it apart in logs).
fn card(serial: u32) -> Card {
    let mut c = Card::new(CardConfig::new(serial));
    c.set_pin_and_puk(YUKI_PIN, "13572468");
    c
}

fn run_with_env(w: &Workstation, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut c = w.tke();
    for (k, v) in env {
        c.env(k, v);
    }
    c.args(args).output().unwrap()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The forms a secret may take in a log: as typed, as a `Debug` byte list, in hex.
fn forms(secret: &str) -> Vec<String> {
    let b = secret.as_bytes();
    vec![
        secret.to_owned(),
        b.iter().map(u8::to_string).collect::<Vec<_>>().join(", "),
        b.iter().map(|x| format!("{x:02x}")).collect(),
    ]
}

#[test]
fn yubikey_and_file_administrators_initialize_and_both_sign_a_command() {
    let bench = Bench::acquire();
    let inserted = bench.insert(0, card(11110001));
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init", "--operational", "1", "--recovery", "1"]);
    let secrets = w.secrets(&[("yuki", YUKI_PIN), ("filey", "filey-password-1")]);
    let s = secrets.to_str().unwrap();

    // Enrol the YubiKey administrator, with every diagnostic on (trace level).
    let o = run_with_env(
        &w,
        &[("TKE_LOG", "trace")],
        &[
            "--secrets",
            s,
            "sigkey-add",
            "--yubikey",
            "--name",
            "yuki",
            "--touch-policy",
            "never",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for line in [
        "YubiKey 11110001 (firmware 5.4.3",
        "A new ECC P-256 key will be generated in slot 9c (digital signature)",
        "PIN policy:   always (the PIN is checked before every signature)",
        "Touch policy: never",
        "Management key: 3DES, the factory default.",
        "on YubiKey 11110001, slot 9c; its certificate was written to the slot",
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }
    let log = stderr(&o);
    assert!(
        log.contains("[DEBUG tke_sigkey_yubikey"),
        "logging is on:\n{log}"
    );
    for f in forms(YUKI_PIN) {
        assert!(!log.contains(&f), "the PIN ({f}) is in the log:\n{log}");
    }

    let keys: Value = serde_json::from_str(&w.ok(&["sigkeys", "--output", "json"])).unwrap();
    assert_eq!(keys[0]["name"], "yuki");
    assert_eq!(keys[0]["kind"], "yubikey");
    assert_eq!(keys[0]["serial"], 11110001);
    assert_eq!(keys[0]["slot"], "9c");

    // Scripted auto-init, threshold 2: one YubiKey administrator, one new file key.
    let o = run_with_env(
        &w,
        &[("TKE_LOG", "trace")],
        &[
            "--secrets",
            s,
            "auto-init",
            "--sig-threshold",
            "2",
            "--rev-threshold",
            "2",
            "--admin",
            "yuki",
            "--new-admin",
            "filey",
            "--yes",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let log = stderr(&o);
    for f in forms(YUKI_PIN).into_iter().chain(forms("filey-password-1")) {
        assert!(!log.contains(&f), "a secret ({f}) is in the log");
    }
    let units = w.compare_json();
    for u in units.as_array().unwrap() {
        let mut names: Vec<&str> = u["admins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["filey", "yuki"]);
        assert_eq!(u["sig_threshold"], 2);
        assert_eq!(u["current_mk"]["state"], "valid");
    }

    // A signed command that needs both: setThresholds (threshold 2) on every unit.
    let files = FilesDir::resolve(Some(w.path())).unwrap();
    let listing = files.signature_keys().unwrap();
    let yuki = listing.by_name("yuki").next().unwrap();
    let SigKeyKind::YubiKey(r) = yuki.kind else {
        panic!("{:?}", yuki.kind)
    };
    let yubikey = YubiKeySigner::open(
        &r,
        yuki.certificate.clone(),
        Pin::new(YUKI_PIN).unwrap(),
        Arc::new(NoTouchPrompt),
    )
    .unwrap();
    let filey = FileSigner::open(
        listing.by_name("filey").next().unwrap(),
        &Password::new("filey-password-1"),
    )
    .unwrap();
    let client = connect(&files.local_dir());
    let set = Command::SetThresholds {
        signature: Threshold::new(2).unwrap(),
        revocation: Threshold::new(1).unwrap(),
    };
    for unit in client.units() {
        let before = client.query(unit).unwrap();
        // One signature is not enough, and changes nothing but the counter.
        let err = client
            .run(unit, &set, &[&filey as &dyn Signer])
            .unwrap_err();
        assert!(matches!(err, ClientError::Module { .. }), "{err:?}");
        let after = client.query(unit).unwrap();
        assert_eq!((after.sig_threshold, after.rev_threshold), (2, 2));
        assert_eq!(after.admins, before.admins);
        client
            .run(unit, &set, &[&filey as &dyn Signer, &yubikey])
            .unwrap();
        assert_eq!(client.query(unit).unwrap().rev_threshold, 1);
    }
    drop(yubikey);
    // The fleet is one process's at a time.
    drop(client);

    // A ceremony file approved with the YubiKey (`tke approve`, offline) and the file key,
    // then applied: the revocation threshold back to 2.
    let plan = w.path().join("thresholds.json");
    let plan_s = plan.to_str().unwrap();
    w.ok(&[
        "plan",
        "cryptounit-thrhld-set",
        "--sig-threshold",
        "2",
        "--rev-threshold",
        "2",
        "--out",
        plan_s,
    ]);
    for admin in ["yuki", "filey"] {
        let o = run_with_env(
            &w,
            &[("TKE_LOG", "trace")],
            &["--secrets", s, "approve", plan_s, "--admin", admin, "--yes"],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let log = stderr(&o);
        for f in forms(YUKI_PIN).into_iter().chain(forms("filey-password-1")) {
            assert!(!log.contains(&f), "a secret ({f}) is in the log");
        }
    }
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    for c in file["rounds"][0]["commands"].as_array().unwrap() {
        let by: Vec<&str> = c["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["admin"].as_str().unwrap())
            .collect();
        assert_eq!(by, ["yuki", "filey"], "{c}");
    }
    w.ok(&["apply", plan_s, "--yes"]);
    for u in w.compare_json().as_array().unwrap() {
        assert_eq!(
            (&u["sig_threshold"], &u["rev_threshold"]),
            (&2.into(), &2.into())
        );
    }

    let card = inserted.remove();
    assert_eq!(card.pin_tries_left(), 3);
}

fn connect(local: &Path) -> Client {
    let fleet = EmbeddedFleet::open(local).unwrap();
    let ca = fleet.ca().clone();
    let t: Arc<dyn Transport> = Arc::new(fleet);
    Client::connect(vec![(t, ca)]).unwrap()
}

/// Enrols `yuki` on a card in reader 0 and returns the card's state and the workstation.
fn enrolled(bench: &Bench, serial: u32) -> (Card, Workstation, std::path::PathBuf) {
    let inserted = bench.insert(0, card(serial));
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let secrets = w.secrets(&[("yuki", YUKI_PIN), ("filey", "filey-password-1")]);
    w.ok(&[
        "--secrets",
        secrets.to_str().unwrap(),
        "sigkey-add",
        "--yubikey",
        "--name",
        "yuki",
    ]);
    (inserted.remove(), w, secrets)
}

#[test]
fn wrong_then_blocked_pin_are_clear_errors_and_change_nothing() {
    let bench = Bench::acquire();
    let (c, w, _) = enrolled(&bench, 11110002);
    w.ok(&["local", "init", "--operational", "1", "--recovery", "1"]);
    let wrong = w.secrets(&[("yuki", "00000000"), ("filey", "filey-password-1")]);
    let wrong = wrong.to_str().unwrap();
    let _card = bench.insert(0, c);
    let args = [
        "--secrets",
        wrong,
        "auto-init",
        "--sig-threshold",
        "1",
        "--rev-threshold",
        "1",
        "--admin",
        "yuki",
        "--yes",
    ];
    let before = w.snapshot();
    let err = w.fails(&args, 1);
    assert!(
        err.contains("wrong PIN for YubiKey 11110002: 2 tries left before the PIN is blocked"),
        "{err}"
    );
    assert!(
        err.contains("cannot open the signature key of yuki"),
        "{err}"
    );
    assert_eq!(
        w.snapshot(),
        before,
        "nothing changed on the workstation or the units"
    );
    assert!(w.fails(&args, 1).contains("1 try left"));
    let err = w.fails(&args, 1);
    assert!(
        err.contains("the PIN of YubiKey 11110002 is blocked"),
        "{err}"
    );
    assert!(err.contains("unblock it with the PUK"), "{err}");
    let o = run_with_env(&w, &[], &args);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is blocked"));
    assert_eq!(w.snapshot(), before);
    for f in forms("00000000") {
        assert!(!err.contains(&f));
    }
}

#[test]
fn no_card_two_cards_and_an_occupied_slot_are_clear_errors_and_change_nothing() {
    let bench = Bench::acquire();
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let secrets = w.secrets(&[("yuki", YUKI_PIN), ("yuki2", YUKI_PIN)]);
    let s = secrets.to_str().unwrap();
    let add = ["--secrets", s, "sigkey-add", "--yubikey", "--name", "yuki"];
    let before = w.snapshot();

    // No card.
    let err = w.fails(&add, 1);
    assert!(err.starts_with("FAILED\nno YubiKey was found"), "{err}");
    assert!(err.contains("insert the YubiKey"), "{err}");
    assert_eq!(w.snapshot(), before);

    // Two cards and no --serial.
    let a = bench.insert(0, card(11110011));
    let b = bench.insert(1, card(11110012));
    let err = w.fails(&add, 1);
    assert!(
        err.contains("several YubiKeys are attached (serial numbers 11110011, 11110012)"),
        "{err}"
    );
    assert!(err.contains("--serial"), "{err}");
    assert_eq!(w.snapshot(), before);
    let err = w.fails(&[&add[..], &["--serial", "999"]].concat(), 1);
    assert!(
        err.contains("YubiKey 999 is not attached (YubiKeys attached: 11110011, 11110012)"),
        "{err}"
    );
    drop(a);
    let card_b = b.remove();
    let b_before = card_b.to_json();

    // A slot that holds a key, without confirmation: refused before any PIN.
    let mut c = card_b;
    let _ = c.generate_key(0x9c, PinPolicy::Always, TouchPolicy::Never);
    let c_before = c.to_json();
    assert_ne!(c_before, b_before);
    let inserted = bench.insert(0, c);
    let err = w.fails(&add, 1);
    assert!(
        err.contains("slot 9c of YubiKey 11110012 already holds a key; nothing was changed"),
        "{err}"
    );
    assert!(
        err.contains("--overwrite-slot") && err.contains("--existing"),
        "{err}"
    );
    assert_eq!(w.snapshot(), before);
    let c = inserted.remove();
    assert_eq!(c.to_json(), c_before, "the card is unchanged");

    // Registering it instead works, and with --overwrite-slot a new key replaces it.
    let old = c.public_key(0x9c).unwrap();
    let inserted = bench.insert(0, c);
    w.ok(&[&add[..], &["--existing"]].concat());
    w.ok(&[
        "--secrets",
        s,
        "sigkey-add",
        "--yubikey",
        "--name",
        "yuki2",
        "--overwrite-slot",
    ]);
    let c = inserted.remove();
    assert_ne!(c.public_key(0x9c), Some(old));
}

#[test]
fn yubico_piv_tool_key_registered_through_tke() {
    let bench = Bench::acquire();
    let inserted = bench.insert(0, card(11110021));
    let o = std::process::Command::new("yubico-piv-tool")
        .args([
            "-r",
            inserted.reader(),
            "-a",
            "generate",
            "-s",
            "9a",
            "-A",
            "ECCP256",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run yubico-piv-tool ({e}): install it with ci/setup.sh")
        });
    assert!(o.status.success(), "{}", stderr(&o));
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let secrets = w.secrets(&[("pivtool", YUKI_PIN)]);
    let out = w.ok(&[
        "--secrets",
        secrets.to_str().unwrap(),
        "sigkey-add",
        "--yubikey",
        "--existing",
        "--slot",
        "9a",
        "--name",
        "pivtool",
    ]);
    assert!(
        out.contains("Slot 9a (PIV authentication) holds a key and no certificate"),
        "{out}"
    );
    assert!(
        out.contains("its certificate was written to the slot"),
        "{out}"
    );
    // It signs: an auto-init with it alone.
    w.ok(&["local", "init", "--operational", "1", "--recovery", "1"]);
    w.ok(&[
        "--secrets",
        secrets.to_str().unwrap(),
        "auto-init",
        "--sig-threshold",
        "1",
        "--rev-threshold",
        "1",
        "--admin",
        "pivtool",
        "--yes",
    ]);
    let units = w.compare_json();
    assert_eq!(units[0]["admins"][0]["name"], "pivtool");
}

#[test]
fn interactive_pin_prompt_and_declined_overwrite() {
    let bench = Bench::acquire();
    let mut c = card(11110031);
    let _ = c.generate_key(0x9c, PinPolicy::Always, TouchPolicy::Never);
    let before = c.to_json();
    let inserted = bench.insert(0, c);
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let spawn = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tke"));
        cmd.arg("--files-dir").arg(w.path()).args(args);
        cmd.env_remove("CLOUDTKEFILES");
        spawn_command(cmd, Some(60_000)).unwrap()
    };
    // Declining the overwrite cancels (exit 3) and changes nothing.
    let mut p = spawn(&["sigkey-add", "--yubikey", "--name", "zoe"]);
    p.exp_string("Destroy it? (y/N)").unwrap();
    p.send_line("n").unwrap();
    p.exp_string("Cancelled. Nothing was changed.").unwrap();
    p.exp_eof().unwrap();
    let status = p.process.wait().unwrap();
    assert!(
        matches!(status, rexpect::process::wait::WaitStatus::Exited(_, 3)),
        "{status:?}"
    );
    // Registering the key: the PIN is asked, hidden; a wrong one is asked again with
    // the tries left.
    let mut p = spawn(&["sigkey-add", "--yubikey", "--existing", "--name", "zoe"]);
    p.exp_string("Enter the PIN of YubiKey 11110031 for zoe:")
        .unwrap();
    p.send_line("11223344").unwrap();
    p.exp_string("wrong PIN for YubiKey 11110031: 2 tries left")
        .unwrap();
    p.exp_string("Enter the PIN of YubiKey 11110031 for zoe:")
        .unwrap();
    p.send_line(YUKI_PIN).unwrap();
    p.exp_string("OK").unwrap();
    p.exp_eof().unwrap();
    let c = inserted.remove();
    assert_eq!(c.pin_tries_left(), 3);
    assert_eq!(
        Card::from_json(&before, tke_piv_vcard::TouchMode::Auto)
            .unwrap()
            .public_key(0x9c),
        c.public_key(0x9c),
        "the key stayed"
    );
}

#[test]
fn a_management_key_from_the_secrets_file_is_used_and_never_logged() {
    let bench = Bench::acquire();
    // An AES-256 management key of the operator's choosing.
    let key: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut c = card(11110041);
    c.set_management_key(
        tke_piv_vcard::MgmKey::new(tke_piv_vcard::MgmAlgorithm::Aes256, &key).unwrap(),
    );
    let _card = bench.insert(0, c);
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let entry = "\"management-key-11110041\"";
    let secrets = w.secrets(&[("mgm", YUKI_PIN), (entry, hex.as_str())]);
    let o = run_with_env(
        &w,
        &[("TKE_LOG", "trace")],
        &[
            "--secrets",
            secrets.to_str().unwrap(),
            "sigkey-add",
            "--yubikey",
            "--name",
            "mgm",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("Management key: AES-256, the key given."),
        "{out}"
    );
    let log = stderr(&o);
    assert!(log.contains("[DEBUG"), "logging is on");
    let decimal = key.iter().map(u8::to_string).collect::<Vec<_>>().join(", ");
    for f in [
        hex.clone(),
        hex.to_uppercase(),
        decimal,
        hex[..16].to_owned(),
    ]
    .into_iter()
    .chain(forms(YUKI_PIN))
    {
        assert!(
            !log.contains(&f) && !out.contains(&f),
            "a secret ({f}) was shown"
        );
    }
}
