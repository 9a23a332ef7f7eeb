//! An interrupted `auto-init` finished with `--resume`: the CLI killed with SIGKILL at
//! every crash point of the ceremony, then resumed; a plain rerun names `--resume`; units
//! changed by someone else are refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{fs, os::unix::process::ExitStatusExt, path::PathBuf};

use common::Workstation;
use serde_json::Value;
use tke_ceremony::auto_init::CRASH_POINTS;

const PW: &[(&str, &str)] = &[("alice", "alice-password-1"), ("bob", "bob-password-22")];

/// A workstation with the keys of alice and bob; returns the secrets file.
fn workstation() -> (Workstation, String) {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let s = w.file_keys(PW);
    (w, s)
}

/// A new embedded fleet of 2 operational units and 1 recovery unit (the keys stay).
fn new_fleet(w: &Workstation) {
    let local = w.path().join("local");
    if local.exists() {
        fs::remove_dir_all(&local).unwrap();
    }
    let _ = fs::remove_file(w.path().join("selection.json"));
    w.ok(&["local", "init", "--operational", "2", "--recovery", "1"]);
}

fn auto_init_args(s: &str) -> Vec<String> {
    common::auto_init_args(s, (2, 1), &["alice", "bob"])
}

/// Runs auto-init with `TKE_CRASH_AT=point` and asserts that it was killed there.
fn crash_at(w: &Workstation, s: &str, point: &str) {
    let o = w
        .tke()
        .args(auto_init_args(s))
        .env(tke_ceremony::crash::CRASH_AT, point)
        .output()
        .unwrap();
    assert_eq!(
        o.status.signal(),
        Some(9),
        "auto-init was not killed at {point}: {:?}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

fn journal(w: &Workstation) -> Option<PathBuf> {
    fs::read_dir(w.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(tke_workstation::JOURNAL_PREFIX)
        })
}

/// The VP the journal recorded for the generated key, if it got that far.
fn journaled_vp(w: &Workstation) -> Option<String> {
    let j: Value = serde_json::from_slice(&fs::read(journal(w)?).unwrap()).unwrap();
    j["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "key-generated")
        .map(|s| s["detail"].as_str().unwrap().to_owned())
}

/// Every unit VALID with one VP, the new register empty, exactly alice and bob (by SKI)
/// and thresholds 2/1. Returns the VP.
fn assert_initialized(w: &Workstation, context: &str) -> String {
    let units = w.compare_json();
    let units = units.as_array().unwrap();
    assert_eq!(units.len(), 3, "{context}");
    let skis: Vec<String> = w
        .ok(&["sigkeys", "--output", "json"])
        .parse::<Value>()
        .map(|v| {
            let mut s: Vec<String> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["ski"].as_str().unwrap().to_owned())
                .collect();
            s.sort();
            s
        })
        .unwrap();
    let vp = units[0]["current_mk"]["vp"].as_str().unwrap().to_owned();
    for u in units {
        assert_eq!(u["current_mk"]["state"], "valid", "{context}: {u}");
        assert_eq!(u["current_mk"]["vp"], vp.as_str(), "{context}: one VP");
        assert_eq!(u["new_mk"]["state"], "empty", "{context}: {u}");
        assert_eq!(
            (u["sig_threshold"].as_u64(), u["rev_threshold"].as_u64()),
            (Some(2), Some(1)),
            "{context}"
        );
        let mut installed: Vec<String> = u["admins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["ski"].as_str().unwrap().to_owned())
            .collect();
        installed.sort();
        assert_eq!(installed, skis, "{context}: exactly alice and bob");
    }
    vp
}

/// The CLI killed at each crash point, then `auto-init --resume`: every unit ends VALID
/// with one VP (the one generated before the crash, when it was), the administrators and
/// thresholds asked; the journal is gone; nobody zeroized anything.
#[test]
fn killed_at_every_crash_point_then_resumed() {
    let (w, s) = workstation();
    for point in CRASH_POINTS {
        new_fleet(&w);
        crash_at(&w, &s, point);
        let left = fs::read_to_string(journal(&w).expect("a journal is left")).unwrap();
        for (_, password) in PW {
            assert!(
                !left.contains(password),
                "{point}: a password in the journal"
            );
        }
        let generated = journaled_vp(&w);
        let out = w.ok(&["--secrets", &s, "auto-init", "--resume", "--yes"]);
        assert!(out.contains("\nOK\n"), "{point}: {out}");
        let vp = assert_initialized(&w, point);
        if let Some(g) = generated {
            assert_eq!(vp, g, "{point}: no second key was generated");
            assert!(
                !out.contains("Generating a random master key value"),
                "{point}: {out}"
            );
        }
        assert!(journal(&w).is_none(), "{point}: the journal is removed");
    }
}

/// A resumed run that is killed in turn is resumed again, from its journal.
#[test]
fn a_killed_resume_is_resumed_again() {
    let (w, s) = workstation();
    new_fleet(&w);
    crash_at(&w, &s, "auto-init:thresholds-on-a-unit");
    let o = w
        .tke()
        .args(["--secrets", &s, "auto-init", "--resume", "--yes"])
        .env(
            tke_ceremony::crash::CRASH_AT,
            "auto-init:committed-on-a-unit",
        )
        .output()
        .unwrap();
    assert_eq!(o.status.signal(), Some(9), "{:?}", o.status);
    let generated = journaled_vp(&w).expect("the resumed run generated the key");
    let out = w.ok(&[
        "--secrets",
        &s,
        "--output",
        "json",
        "auto-init",
        "--resume",
        "--yes",
    ]);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["vp"], generated.as_str(), "{out}");
    assert_eq!(report["units"], serde_json::json!([1, 2, 3]), "{out}");
    assert_eq!(assert_initialized(&w, "resumed twice"), generated);
    assert!(journal(&w).is_none());
}

/// After a crash, a plain rerun changes nothing and names `--resume`; the resumed run
/// keeps the key the recovery unit holds. Without the journal (another workstation, or
/// lost), the rerun still names `--resume`, and the resume reads the administrators and
/// thresholds from the units.
#[test]
fn a_rerun_after_a_crash_names_resume_and_the_units_suffice_without_the_journal() {
    let (w, s) = workstation();
    new_fleet(&w);
    crash_at(&w, &s, "auto-init:imported-on-a-unit");
    let before = state(&w);
    let rerun = auto_init_args(&s);
    let rerun: Vec<&str> = rerun.iter().map(String::as_str).collect();
    w.check("auto_init_rerun_after_crash", &rerun, 1, &[]);
    assert_unchanged(&w, &before, "the rerun");

    fs::remove_file(journal(&w).unwrap()).unwrap();
    w.check("auto_init_rerun_after_crash_no_journal", &rerun, 1, &[]);
    let vp = w.compare_json()[2]["current_mk"]["vp"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = w.ok(&["--secrets", &s, "auto-init", "--resume", "--yes"]);
    assert!(
        out.contains(
            "resuming from what the crypto units hold (thresholds 2/1, administrators alice, bob)"
        ),
        "{out}"
    );
    assert_eq!(assert_initialized(&w, "no journal"), vp);
}

/// Bad input to --resume: nothing to resume, a corrupt journal, flags that --resume takes
/// from the journal, a unit changed by someone else. Each refused, nothing changed.
#[test]
fn resume_refusals() {
    let (w, s) = workstation();
    new_fleet(&w);
    let resume = ["--secrets", &s, "auto-init", "--resume", "--yes"];
    w.check("auto_init_resume_nothing_to_resume", &resume, 1, &[]);
    w.check(
        "auto_init_resume_with_thresholds",
        &["auto-init", "--resume", "--sig-threshold", "2"],
        2,
        &[],
    );

    crash_at(&w, &s, "auto-init:admins-installed");
    let path = journal(&w).unwrap();
    let good = fs::read(&path).unwrap();
    fs::write(&path, b"{\"version\":1,\"command\":\"auto-init\"").unwrap();
    let before = state(&w);
    w.check("auto_init_resume_corrupt_journal", &resume, 1, &[]);
    assert_unchanged(&w, &before, "a corrupt journal");
    // Well-formed JSON, but a field that does not parse.
    let mut bad: Value = serde_json::from_slice(&good).unwrap();
    bad["params"]["admins"][1]["ski"] = Value::from("not-a-ski");
    fs::write(&path, serde_json::to_vec(&bad).unwrap()).unwrap();
    let before = state(&w);
    w.check("auto_init_resume_journal_bad_ski", &resume, 1, &[]);
    assert_unchanged(&w, &before, "a journal with a bad SKI");
    fs::write(&path, &good).unwrap();

    // Without a terminal, the confirmation needs --yes; nothing is sent without it.
    let before = state(&w);
    w.check(
        "auto_init_resume_without_yes",
        &["--secrets", &s, "auto-init", "--resume"],
        1,
        &[],
    );
    assert_unchanged(&w, &before, "a resume without --yes");

    // Someone installs another administrator on a unit still in imprint mode (unsigned):
    // the journal cannot explain it.
    w.file_keys(&[("mallory", "mallory-password")]);
    let s2 = w.secrets(&[PW[0], PW[1], ("mallory", "mallory-password")]);
    let s2 = s2.to_str().unwrap();
    w.ok(&["--secrets", s2, "cryptounit-rm", "2", "3"]);
    w.ok(&[
        "--secrets",
        s2,
        "cryptounit-admin-add",
        "--admin",
        "mallory",
    ]);
    let before = state(&w);
    w.check(
        "auto_init_resume_unexplained",
        &["--secrets", s2, "auto-init", "--resume", "--yes"],
        1,
        &[],
    );
    assert_unchanged(&w, &before, "an unexplained state");
}

/// The workstation's files outside the fleet, and every unit's state (counter included).
/// The units' backend files are left out: opening a unit after a crash destroys the
/// secrets its state no longer refers to (an importer key used up), which is no change.
type State = (Vec<(PathBuf, Vec<u8>)>, Value);

fn state(w: &Workstation) -> State {
    let local = w.path().join("local");
    let files = w
        .snapshot()
        .into_iter()
        .filter(|(p, _)| !p.starts_with(&local))
        .collect();
    (files, w.compare_json())
}

/// Asserts that nothing changed since `before`.
fn assert_unchanged(w: &Workstation, before: &State, what: &str) {
    let after = state(w);
    assert!(after.0 == before.0, "{what} changed workstation files");
    assert_eq!(after.1, before.1, "{what} changed crypto units");
}
