//! End-to-end `auto-init` through the real `tke` binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Workstation;
use serde_json::Value;

const PW: &[(&str, &str)] = &[
    ("alice", "alice-password-1"),
    ("bob", "bob-password-22"),
    ("carol", "carol-password-333"),
];

fn init_fleet(w: &Workstation) {
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
}

#[test]
fn scripted_auto_init_of_six_units_leaves_one_valid_master_key_everywhere() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    init_fleet(&w);
    let secrets = w.secrets(PW);
    let out = w.ok(&[
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
    ]);
    for line in [
        "Installing 1 of 3 administrators....",
        "Installing 3 of 3 administrators....",
        "Setting signature thresholds....",
        "Generating a random master key value....",
        "Transferring the master key value to 1 of 5 crypto units....",
        "Transferring the master key value to 5 of 5 crypto units....",
        "OK",
        "The selected service instance has been initialized.",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }

    let units = w.compare_json();
    let units = units.as_array().unwrap();
    assert_eq!(
        units.len(),
        6,
        "auto-init selects every unit, failover included"
    );
    let types: Vec<&str> = units.iter().map(|u| u["type"].as_str().unwrap()).collect();
    assert_eq!(types.iter().filter(|t| **t == "operational").count(), 2);
    assert_eq!(types.iter().filter(|t| **t == "recovery").count(), 2);
    assert_eq!(types.iter().filter(|t| **t == "failover").count(), 2);
    let vp = units[0]["current_mk"]["vp"].as_str().unwrap().to_owned();
    assert_eq!(vp.len(), 64);
    let admins0 = units[0]["admins"].clone();
    let names: Vec<&str> = admins0
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    for u in units {
        assert_eq!(u["imprint_mode"], Value::Bool(false));
        assert_eq!(u["sig_threshold"], 2);
        assert_eq!(u["rev_threshold"], 2);
        assert_eq!(u["admins"], admins0);
        assert_eq!(u["current_mk"]["state"], "valid");
        assert_eq!(u["current_mk"]["vp"], Value::String(vp.clone()));
        assert_eq!(u["new_mk"]["state"], "empty");
        assert_eq!(u["new_mk"]["vp"], Value::Null);
    }

    // The table view says the same thing in the vendor's layout.
    let table = w.ok(&["cryptounit-compare"]);
    assert!(table.contains("CURRENT MASTER KEY REGISTER"));
    assert!(table.contains(&vp[..32]) && table.contains(&vp[32..]));
    assert!(table.contains("configured identically"));

    // A second auto-init is refused with the vendor's advice, and changes nothing.
    let before = w.snapshot();
    let err = w.fails(
        &[
            "--secrets",
            secrets.to_str().unwrap(),
            "auto-init",
            "--sig-threshold",
            "2",
            "--rev-threshold",
            "2",
            "--admin",
            "alice",
            "--admin",
            "bob",
            "--yes",
        ],
        1,
    );
    assert!(err.contains("not in imprint mode"), "{err}");
    assert!(err.contains("cryptounit-compare"), "{err}");
    assert_eq!(before, w.snapshot());
}

#[test]
fn existing_keys_are_reused_by_name() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let secrets = w.secrets(PW);
    let s = secrets.to_str().unwrap();
    w.ok(&["--secrets", s, "sigkey-add", "--name", "alice"]);
    let keys: Value = serde_json::from_str(&w.ok(&["sigkeys", "--output", "json"])).unwrap();
    let alice_ski = keys[0]["ski"].as_str().unwrap().to_owned();
    // No fleet is ever created implicitly: a ceremony without one is refused, naming
    // the command that makes one, and creates nothing.
    w.check(
        "auto_init_without_a_fleet",
        &[
            "--secrets",
            s,
            "auto-init",
            "--sig-threshold",
            "1",
            "--rev-threshold",
            "1",
            "--admin",
            "alice",
            "--new-admin",
            "bob",
            "--yes",
        ],
        1,
        &[],
    );
    assert!(!w.path().join("local").exists());
    // The default fleet (2 operational + 2 recovery).
    w.ok(&["local", "init"]);
    let o = w.run(&[
        "--secrets",
        s,
        "auto-init",
        "--sig-threshold",
        "1",
        "--rev-threshold",
        "1",
        "--admin",
        "alice",
        "--new-admin",
        "bob",
        "--yes",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let units = w.compare_json();
    assert_eq!(units.as_array().unwrap().len(), 4);
    for u in units.as_array().unwrap() {
        assert_eq!(u["admins"][0]["ski"], Value::String(alice_ski.clone()));
        assert_eq!(u["current_mk"]["state"], "valid");
    }
}

#[test]
fn bad_answers_are_refused_and_change_nothing() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    init_fleet(&w);
    let secrets = w.secrets(PW);
    let s = secrets.to_str().unwrap();
    w.ok(&["--secrets", s, "sigkey-add", "--name", "alice"]);
    let before = w.snapshot();
    let base = ["--secrets", s, "auto-init", "--yes"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--sig-threshold",
                "0",
                "--rev-threshold",
                "1",
                "--admin",
                "alice",
            ],
            "between 1 and 8",
        ),
        (
            vec![
                "--sig-threshold",
                "9",
                "--rev-threshold",
                "1",
                "--admin",
                "alice",
            ],
            "between 1 and 8",
        ),
        (
            vec![
                "--sig-threshold",
                "1",
                "--rev-threshold",
                "9",
                "--admin",
                "alice",
            ],
            "between 1 and 8",
        ),
        (
            vec![
                "--sig-threshold",
                "2",
                "--rev-threshold",
                "1",
                "--admin",
                "alice",
            ],
            "need at least 2",
        ),
        (
            vec![
                "--instance",
                "7",
                "--sig-threshold",
                "1",
                "--rev-threshold",
                "1",
                "--admin",
                "alice",
            ],
            "INSTANCE NUM 7 does not exist",
        ),
        (
            vec![
                "--sig-threshold",
                "1",
                "--rev-threshold",
                "1",
                "--admin",
                "nobody",
            ],
            "no signature key of that name",
        ),
        (
            vec![
                "--sig-threshold",
                "1",
                "--rev-threshold",
                "1",
                "--new-admin",
                "a-name-that-is-longer-than-thirty-chars",
            ],
            "longer than 30 characters",
        ),
        (
            vec![
                "--sig-threshold",
                "1",
                "--rev-threshold",
                "1",
                "--new-admin",
                "a1",
                "--new-admin",
                "a2",
                "--new-admin",
                "a3",
                "--new-admin",
                "a4",
                "--new-admin",
                "a5",
                "--new-admin",
                "a6",
                "--new-admin",
                "a7",
                "--new-admin",
                "a8",
                "--new-admin",
                "a9",
            ],
            "at most 8",
        ),
        (
            vec!["--rev-threshold", "1", "--admin", "alice"],
            "--sig-threshold",
        ),
    ];
    for (extra, expect) in cases {
        let mut args: Vec<&str> = base.to_vec();
        args.extend(extra.iter());
        let err = w.fails(&args, 1);
        assert!(err.contains("FAILED"), "{err}");
        assert!(
            err.contains(expect),
            "tke {args:?}: expected {expect:?} in:\n{err}"
        );
        assert_eq!(before, w.snapshot(), "tke {args:?} changed files");
    }
}

#[test]
fn wrong_password_fails_and_leaves_the_key_file_unchanged() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    init_fleet(&w);
    let good = w.secrets(PW);
    w.ok(&[
        "--secrets",
        good.to_str().unwrap(),
        "sigkey-add",
        "--name",
        "alice",
    ]);
    let before = w.snapshot();
    let bad = w.secrets(&[("alice", "not-the-password")]);
    let err = w.fails(
        &[
            "--secrets",
            bad.to_str().unwrap(),
            "auto-init",
            "--sig-threshold",
            "1",
            "--rev-threshold",
            "1",
            "--admin",
            "alice",
            "--yes",
        ],
        1,
    );
    assert!(err.to_lowercase().contains("wrong password"), "{err}");
    let after = w.snapshot();
    // Only the secrets file we rewrote differs.
    let strip = |v: Vec<(std::path::PathBuf, Vec<u8>)>| -> Vec<_> {
        v.into_iter()
            .filter(|(p, _)| !p.ends_with("secrets.toml"))
            .collect()
    };
    assert_eq!(strip(before), strip(after));
}

#[test]
fn secrets_file_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let s = w.secrets(PW);
    std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = w.fails(
        &[
            "--secrets",
            s.to_str().unwrap(),
            "sigkey-add",
            "--name",
            "alice",
        ],
        1,
    );
    assert!(err.contains("chmod 600"), "{err}");
}
