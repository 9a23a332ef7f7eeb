//! End-to-end `auto-recover` through the real `tke` binary, on the embedded fleet: a
//! zeroized unit, brought out of imprint mode again, receives the instance's master key;
//! every pre-check refuses with nothing changed; a run killed at each crash point is
//! finished by the next, its workstation journal left meanwhile and removed at the end; a
//! journal of another recovery is refused, a missing one said.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::process::ExitStatusExt as _;

use common::{
    terminal::{check_steps, Answer::Hidden, Answer::Line, Terminal},
    Workstation,
};
use serde_json::Value;

const PW: &[(&str, &str)] = &[
    ("alice", "alice-password-1"),
    ("bob", "bob-password-22"),
    ("P1", "part-password-1"),
    ("P2", "part-password-2"),
];

/// The default fleet (operational 1 and 2, recovery 3 and 4) initialized by alice and bob
/// with thresholds 2/1; returns the workstation, the secrets file and the master key's VP.
fn initialized() -> (Workstation, String, String) {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init"]);
    w.file_keys(&PW[..2]);
    let s = w.secrets(PW).to_str().unwrap().to_owned();
    w.auto_init(&s, (2, 1), &["alice", "bob"]);
    let vp = vps(&w)[0].1.clone();
    (w, s, vp)
}

/// Selects exactly the units `nums`.
fn select(w: &Workstation, nums: &[&str]) {
    w.ok(&["cryptounit-rm", "1", "2", "3", "4"]);
    let mut args = vec!["cryptounit-add"];
    args.extend(nums);
    w.ok(&args);
}

/// Zeroizes the units `nums`, then installs alice and bob and sets thresholds `sig`/1 on
/// them: out of imprint mode with empty registers.
fn zeroize_and_reimprint(w: &Workstation, s: &str, nums: &[&str], sig: &str) {
    select(w, nums);
    w.ok(&["--secrets", s, "cryptounit-zeroize", "--yes"]);
    w.ok(&["--secrets", s, "cryptounit-admin-add", "--admin", "alice"]);
    w.ok(&["--secrets", s, "cryptounit-admin-add", "--admin", "bob"]);
    w.ok(&[
        "--secrets",
        s,
        "cryptounit-thrhld-set",
        "--sig-threshold",
        sig,
        "--rev-threshold",
        "1",
    ]);
}

/// Every unit's number, current register (state, VP) and new register state, by number.
fn registers(w: &Workstation) -> Vec<(u64, String, String, String)> {
    select(w, &["1", "2", "3", "4"]);
    let units = w.compare_json();
    units
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["num"].as_u64().unwrap(),
                u["current_mk"]["state"].as_str().unwrap().to_owned(),
                u["current_mk"]["vp"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                u["new_mk"]["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Each unit's number and current VP.
fn vps(w: &Workstation) -> Vec<(u64, String)> {
    registers(w)
        .into_iter()
        .map(|(n, _, vp, _)| (n, vp))
        .collect()
}

/// Asserts that every unit holds `vp` current (`Valid`) and an empty new register.
fn assert_all_hold(w: &Workstation, vp: &str) {
    for (num, state, current, new) in registers(w) {
        assert_eq!(
            (state.as_str(), current.as_str(), new.as_str()),
            ("valid", vp, "empty"),
            "crypto unit {num}"
        );
    }
}

/// `auto-recover` refused with the snapshot `name`, changing no file (unit state,
/// selection) of the workstation.
fn refused(w: &Workstation, name: &str, args: &[&str]) {
    let before = w.snapshot();
    w.check(name, args, 1, &[]);
    assert_eq!(
        before,
        w.snapshot(),
        "{name}: a refused auto-recover changed files"
    );
}

#[test]
fn a_zeroized_operational_unit_gets_the_instance_master_key_back_after_every_check() {
    let (w, s, vp) = initialized();

    // Nothing to recover while every unit holds the key.
    let out = w.ok(&["--secrets", &s, "auto-recover", "--yes"]);
    assert!(out.contains("there is nothing to recover"), "{out}");

    // Unit 1 zeroized: in imprint mode it cannot receive a key.
    select(&w, &["1"]);
    w.ok(&["--secrets", &s, "cryptounit-zeroize", "--yes"]);
    refused(
        &w,
        "auto_recover_target_in_imprint_mode",
        &["--secrets", &s, "auto-recover", "--yes"],
    );

    // Re-imprinted with other thresholds than the instance's.
    w.ok(&["--secrets", &s, "cryptounit-admin-add", "--admin", "alice"]);
    w.ok(&["--secrets", &s, "cryptounit-admin-add", "--admin", "bob"]);
    for (sig, rev) in [("1", "1"), ("2", "1")] {
        w.ok(&[
            "--secrets",
            &s,
            "cryptounit-thrhld-set",
            "--sig-threshold",
            sig,
            "--rev-threshold",
            rev,
        ]);
        if sig == "1" {
            refused(
                &w,
                "auto_recover_thresholds_differ",
                &["--secrets", &s, "auto-recover", "--yes"],
            );
        }
    }

    // One key that may sign, for a signature threshold of 2.
    refused(
        &w,
        "auto_recover_too_few_common_signers",
        &[
            "--secrets",
            &s,
            "auto-recover",
            "--signer",
            "alice",
            "--yes",
        ],
    );
    // A source that is not a recovery unit, and one that does not exist.
    refused(
        &w,
        "auto_recover_source_not_recovery",
        &["--secrets", &s, "auto-recover", "--source", "2", "--yes"],
    );

    // Unit 1 loaded with another master key (from parts): never overwritten.
    for part in ["P1", "P2"] {
        w.ok(&["--secrets", &s, "mk-add", "--random", "--description", part]);
    }
    w.ok(&[
        "--secrets",
        &s,
        "cryptounit-mk-load",
        "--part",
        "P1",
        "--part",
        "P2",
    ]);
    w.ok(&["--secrets", &s, "cryptounit-mk-commit"]);
    w.ok(&["--secrets", &s, "cryptounit-mk-setimm", "--yes"]);
    assert_ne!(vps(&w)[0].1, vp);
    select(&w, &["1"]);
    refused(
        &w,
        "auto_recover_other_master_key",
        &["--secrets", &s, "auto-recover", "--yes"],
    );

    // Its current register cleared (the accident the vendor names): recovered. On a
    // terminal it asks first (no changes nothing), then the passwords of the quorum.
    w.ok(&["--secrets", &s, "cryptounit-mk-clrcur", "--yes"]);
    check_steps(
        &w,
        "cancelled_auto_recover",
        &["auto-recover"],
        &[("(y/N)", Line("n"))],
        3,
    );
    let mut t = Terminal::spawn(
        &w,
        &["auto-recover", "--signer", "bob", "--signer", "alice"],
    );
    for (at, answer) in [
        ("(y/N)", Line("y")),
        ("> ", Hidden("bob-password-22")),
        ("> ", Hidden("alice-password-1")),
    ] {
        t.expect(at);
        t.answer(&answer);
    }
    let (shown, code) = t.finish();
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("Signed by: bob, alice"), "{shown}");
    assert_all_hold(&w, &vp);
    select(&w, &["1"]);
    w.ok(&["--secrets", &s, "cryptounit-mk-clrcur", "--yes"]);
    let out = w.ok(&[
        "--secrets",
        &s,
        "auto-mk-recover",
        "--admin",
        "alice",
        "--admin",
        "bob",
        "--yes",
    ]);
    for line in [
        "Transferring the master key value to 1 of 1 crypto units....",
        "Signed by: alice, bob",
        "OK",
        "The master key of recovery crypto unit 3 is current in crypto unit(s) 1.",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    assert_all_hold(&w, &vp);
    // The whole instance is selected, as after every auto-* command.
    let out = w.ok(&["cryptounits", "--output", "json"]);
    assert!(!out.contains("\"selected\": false"), "{out}");
}

#[test]
fn auto_recover_needs_a_recovery_unit_of_the_instance_holding_a_master_key() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init", "--instances", "2"]);
    w.file_keys(&PW[..1]);
    let s = w.secrets(PW);
    let s = s.to_str().unwrap();
    refused(
        &w,
        "auto_recover_no_source",
        &["--secrets", s, "auto-recover", "--instance", "1", "--yes"],
    );
    // Units 5-8 are instance 2's: the source is a recovery unit of the instance recovered
    // (another instance receives the key with --to-instance, auto_recover_instances.rs).
    for (name, source) in [
        ("auto_recover_source_missing", "9"),
        ("auto_recover_source_other_instance", "7"),
    ] {
        refused(
            &w,
            name,
            &[
                "auto-recover",
                "--instance",
                "1",
                "--source",
                source,
                "--yes",
            ],
        );
    }
    // Without a terminal, the instance is not guessed.
    refused(
        &w,
        "auto_recover_instance_not_given",
        &["auto-recover", "--yes"],
    );

    // The zeroize guard's override names an instance of the fleet, or nothing happens.
    w.ok(&["cryptounit-add", "1"]);
    for (name, command) in [
        (
            "zeroize_force_with_keys_unknown_instance",
            "cryptounit-zeroize",
        ),
        (
            "clrcur_force_with_keys_unknown_instance",
            "cryptounit-mk-clrcur",
        ),
    ] {
        refused(
            &w,
            name,
            &[command, "--force-with-keys", "no-such-instance", "--yes"],
        );
    }
}

#[test]
fn a_recovery_killed_at_each_step_is_finished_by_the_next_run() {
    let (w, s, vp) = initialized();
    let points = [
        ("after-importers", "empty"),
        ("after-export", "empty"),
        ("after-import", "full_uncommitted"),
        ("after-commit", "full_committed"),
        ("after-setimm", "empty"),
    ];
    for (point, new_after_kill) in points {
        // Operational unit 2 and recovery unit 4 lose the key; 3 is the source.
        zeroize_and_reimprint(&w, &s, &["2", "4"], "2");
        let o = w
            .tke()
            .env("TKE_CRASH_AT", format!("auto-recover:{point}"))
            .args(["--secrets", &s, "auto-recover", "--yes"])
            .output()
            .unwrap();
        assert_eq!(o.status.signal(), Some(9), "{point}: not killed: {o:?}");

        // Stopped: the source and unit 1 untouched, a target at the step the point names.
        let regs = registers(&w);
        assert_eq!(regs[0], (1, "valid".into(), vp.clone(), "empty".into()));
        assert_eq!(regs[2], (3, "valid".into(), vp.clone(), "empty".into()));
        let stopped: Vec<&str> = [&regs[1], &regs[3]].iter().map(|r| r.3.as_str()).collect();
        assert!(
            stopped.contains(&new_after_kill),
            "{point}: new registers {stopped:?}"
        );
        // The workstation's journal of the run is left (0600, no password in it).
        assert!(w.journal("auto-recover").is_some(), "{point}: no journal");

        let out = w.ok(&[
            "--secrets",
            &s,
            "--output",
            "json",
            "auto-recover",
            "--resume",
            "--yes",
        ]);
        let report: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["vp"], vp.as_str(), "{point}");
        // Where the journal says the killed run stopped.
        let step = if point == "after-importers" {
            "importers-generated"
        } else {
            "key-exported"
        };
        assert_eq!(report["interrupted"]["step"], step, "{point}: {out}");
        let resumed = report["resumed"].as_array().unwrap();
        // Killed after the import or commit of one target, the run resumes there (after
        // set immediate the other target may be part-way too); before any import, there
        // is nothing to resume: the importer keys are made again.
        match point {
            "after-import" | "after-commit" => assert!(!resumed.is_empty(), "{point}: {out}"),
            "after-setimm" => {}
            _ => assert!(resumed.is_empty(), "{point}: {out}"),
        }
        let mut done: Vec<u64> = report["recovered"]
            .as_array()
            .unwrap()
            .iter()
            .chain(report["unchanged"].as_array().unwrap())
            .map(|n| n.as_u64().unwrap())
            .collect();
        done.sort_unstable();
        assert_eq!(done, [1, 2, 4], "{point}: {out}");
        assert_all_hold(&w, &vp);
        assert_eq!(
            w.journal("auto-recover"),
            None,
            "{point}: the journal is left"
        );
    }
}

#[test]
fn a_recovery_journal_is_checked_against_the_units_and_a_missing_one_is_said() {
    let (w, s, vp) = initialized();
    zeroize_and_reimprint(&w, &s, &["2"], "2");
    let args = ["--secrets", s.as_str(), "auto-recover", "--yes"];
    w.crash("auto-recover:after-import", &args);
    let path = w.journal_path("auto-recover").expect("a journal");
    let kept = std::fs::read_to_string(&path).unwrap();
    let journal: Value = serde_json::from_str(&kept).unwrap();
    let source = journal["params"]["source"].as_str().unwrap();
    let target = journal["params"]["targets"][0].as_str().unwrap();
    let nobody = "00000000-0000-4000-8000-000000000000";

    // The journal of another recovery: refused, naming the file and what differs;
    // nothing changed.
    for (name, from, to) in [
        (
            "recover_journal_of_another_key",
            vp.as_str(),
            &*"00".repeat(32),
        ),
        ("recover_journal_from_another_unit", source, nobody),
        ("recover_journal_of_other_targets", target, nobody),
    ] {
        std::fs::write(&path, kept.replace(from, to)).unwrap();
        refused(&w, name, &args);
    }
    // A journal cut short (or of another version) is not guessed at.
    std::fs::write(&path, &kept[..kept.len() / 2]).unwrap();
    refused(&w, "recover_journal_corrupt", &args);

    // The journal as it was, and unit 1 has lost the key since: the run says where the
    // interrupted one stopped, that unit 1 is not in its journal, and recovers both.
    std::fs::write(&path, &kept).unwrap();
    zeroize_and_reimprint(&w, &s, &["1"], "2");
    let out = w.ok(&args);
    assert!(
        out.contains("was interrupted after step key-exported at ")
            && out.contains("Crypto unit(s) 1 need the master key too and are not in the journal"),
        "{out}"
    );
    assert_eq!(w.journal("auto-recover"), None);
    assert_all_hold(&w, &vp);

    // No journal: the run says so, finishes from the units, and leaves none.
    zeroize_and_reimprint(&w, &s, &["2"], "2");
    w.crash("auto-recover:after-import", &args);
    std::fs::remove_file(w.journal_path("auto-recover").unwrap()).unwrap();
    let out = w.ok(&args);
    assert!(
        out.contains(&format!(
            "No journal of an interrupted auto-recover of service instance {} is in {}",
            journal["instance"].as_str().unwrap(),
            w.path().display()
        )),
        "{out}"
    );
    assert!(out.contains("Resuming an interrupted recovery"), "{out}");
    assert_eq!(w.journal("auto-recover"), None);
    assert_all_hold(&w, &vp);
}
