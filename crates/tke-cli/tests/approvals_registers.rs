//! Ceremony files of the master key register commands and of zeroize through the real
//! binary: `tke plan cryptounit-mk-commit | -setimm | -clrnew | -clrcur |
//! cryptounit-zeroize`, approved by alice and bob each in their own workstation directory
//! (holding only their own key), applied from the operator's directory, which holds no
//! key; the key-storage guard when planned and again when applied.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod approvals_setup;
mod common;

use std::fs;

use approvals_setup::{
    apply, arg, failure, library, load_new, plan, refused, setup, states, summaries,
};
use common::{
    snap,
    terminal::{Answer, Terminal},
    Workstation,
};
use serde_json::Value;

#[test]
fn register_commands_and_zeroize_are_planned_approved_on_two_workstations_and_applied() {
    let s = setup();
    let w = &s.operator;
    let full = |state: &str, current: &str| vec![(state.to_owned(), current.to_owned(), false); 4];

    // Commit: the signature threshold (2) on every unit. Nothing is sent before both
    // approved; then every new register is committed, and a second apply sends nothing.
    load_new(&s, &[1, 2, 4]);
    let commit = plan(w, "cryptounit-mk-commit", &[]);
    let text = fs::read_to_string(&commit).unwrap();
    assert!(text.contains("\"ceremony\": \"Committing the new master key register\""));
    let said = summaries(&commit);
    assert_eq!(said.len(), 4, "one command per unit: {said:?}");
    assert!(said
        .iter()
        .all(|(_, t)| t.starts_with("commit the new master key register (verification pattern ")));
    refused(&s, &commit, &[], 4, "approvals_registers_commit_unapproved");
    let at_alice = s.alice.approve(&commit);
    refused(
        &s,
        &at_alice,
        &[],
        4,
        "approvals_registers_commit_one_approval",
    );
    let at_bob = s.bob.approve(&at_alice);
    let out = apply(&s, &at_bob, &[]);
    assert!(
        out.contains("Crypto unit 3: signed by alice, bob."),
        "{out}"
    );
    assert_eq!(states(w), full("full_committed", "valid"));
    let again = apply(&s, &at_bob, &[]);
    assert!(
        again.contains("applied already; nothing was sent"),
        "{again}"
    );
    // Planned again: every unit holds the result; no file.
    let out = w.ok(&["plan", "cryptounit-mk-commit", "--out", "again.json"]);
    assert!(out.contains("no ceremony file was written"), "{out}");
    assert!(!w.path().join("again.json").exists());

    // Set immediate: one signature per unit, so alice's approval alone applies.
    let setimm = plan(w, "cryptounit-mk-setimm", &[]);
    let at_alice = s.alice.approve(&setimm);
    apply(&s, &at_alice, &[]);
    assert_eq!(states(w), full("empty", "valid"));

    // Clear new, where unit 4's new register is empty already: it gets no command.
    load_new(&s, &[1, 2]);
    let clrnew = plan(w, "cryptounit-mk-clrnew", &[]);
    let nums: Vec<u64> = summaries(&clrnew).iter().map(|(n, _)| *n).collect();
    assert_eq!(nums, vec![1, 2, 3]);
    apply(&s, &s.alice.approve(&clrnew), &[]);
    assert_eq!(states(w), full("empty", "valid"));

    // Clear current: the recovery units need their signature threshold. With alice's
    // approval only, nothing is sent to any unit (exit code 4 names units 3 and 4).
    let clrcur = plan(w, "cryptounit-mk-clrcur", &[]);
    let at_alice = s.alice.approve(&clrcur);
    refused(
        &s,
        &at_alice,
        &[],
        4,
        "approvals_registers_clrcur_recovery_quorum",
    );
    apply(&s, &s.bob.approve(&at_alice), &[]);
    assert_eq!(states(w), full("empty", "empty"));

    // Zeroize: an edited file is refused by approve and by apply, naming the field; the
    // approved one returns every unit to imprint mode.
    let zeroize = plan(w, "cryptounit-zeroize", &[]);
    let at_alice = s.alice.approve(&zeroize);
    let mut v: Value = serde_json::from_str(&fs::read_to_string(&at_alice).unwrap()).unwrap();
    v["rounds"][0]["commands"][0]["summary"] = Value::from("clear the new master key register");
    let edited = s.bob.w.path().join("edited.json");
    fs::write(&edited, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    let args = [
        "--secrets",
        &s.bob.secrets,
        "approve",
        arg(&edited),
        "--admin",
        "bob",
        "--yes",
    ];
    let err = failure(&s, &s.bob.w, &args, 1);
    snap::assert_snapshot("approvals_registers_zeroize_edited_approve", &err);
    refused(
        &s,
        &edited,
        &[],
        1,
        "approvals_registers_zeroize_edited_apply",
    );
    apply(&s, &s.bob.approve(&at_alice), &[]);
    assert_eq!(
        states(w),
        vec![("empty".to_owned(), "empty".to_owned(), true); 4]
    );
    let out = w.ok(&["plan", "cryptounit-zeroize", "--out", "again.json"]);
    assert!(out.contains("no ceremony file was written"), "{out}");
}

#[test]
fn the_key_storage_guard_refuses_when_planned_and_again_when_applied() {
    let s = setup();
    let w = &s.operator;
    w.ok(&["cryptounit-rm", "2", "3", "4"]);
    let instance = library(w).instances()[0].to_string();
    let unit1 = |w: &Workstation| states(w)[0].clone();
    let valid = ("empty".to_owned(), "valid".to_owned(), false);

    // Clear current planned and approved while key storage is empty; keys stored since
    // refuse it when applied. Giving --force-with-keys then is refused too: the
    // approvers never saw the keys at stake.
    let clrcur = plan(w, "cryptounit-mk-clrcur", &[]);
    let text = fs::read_to_string(&clrcur).unwrap();
    assert!(!text.contains("force_with_keys"), "{text}");
    let at_alice = s.alice.approve(&clrcur);
    w.ok(&["kms", "create", "--name", "root", "--count", "3"]);
    refused(
        &s,
        &at_alice,
        &[],
        1,
        "approvals_registers_clrcur_keys_stored_since",
    );
    refused(
        &s,
        &at_alice,
        &["--force-with-keys", &instance],
        1,
        "approvals_registers_clrcur_force_not_planned",
    );

    // Zeroize: refused when planned (no file); planned with --force-with-keys, the file
    // records it and approvers are shown it.
    let out = w.path().join("zeroize.json");
    let args = ["plan", "cryptounit-zeroize", "--out", arg(&out)];
    snap::assert_snapshot(
        "approvals_registers_zeroize_plan_guarded",
        &failure(&s, w, &args, 1),
    );
    assert!(!out.exists());
    let zeroize = plan(w, "cryptounit-zeroize", &["--force-with-keys", &instance]);
    let v: Value = serde_json::from_str(&fs::read_to_string(&zeroize).unwrap()).unwrap();
    assert_eq!(v["force_with_keys"][0]["instance"], instance.as_str());
    assert_eq!(v["force_with_keys"][0]["keys"], 3);
    let copy = s.alice.w.path().join("zeroize.json");
    fs::copy(&zeroize, &copy).unwrap();
    let shown = s.alice.w.ok(&[
        "--secrets",
        &s.alice.secrets,
        "approve",
        arg(&copy),
        "--admin",
        "alice",
        "--yes",
    ]);
    assert!(
        shown.contains(&format!(
            "WARNING: planned with --force-with-keys {instance}: the key storage of service instance {instance} held 3 key(s)"
        )),
        "{shown}"
    );

    // Applied without --force-with-keys: refused again, nothing sent; with it: done.
    refused(
        &s,
        &copy,
        &[],
        1,
        "approvals_registers_zeroize_apply_guarded",
    );
    assert_eq!(unit1(w), valid);
    // On a terminal, apply asks for the id of the instance the file records: a wrong
    // one cancels with nothing sent.
    let before = w.snapshot();
    let mut t = Terminal::spawn(w, &["apply", arg(&copy), "--yes"]);
    t.expect("type the service instance id");
    t.answer(&Answer::Line("not-the-id"));
    let (text, code) = t.finish();
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("Cancelled. No crypto unit was changed."),
        "{text}"
    );
    assert_eq!(before, w.snapshot(), "a cancelled apply changed something");
    // The right id lets it through (--force-with-keys does the same in scripts:
    // approvals_rotate's recovery test).
    let mut t = Terminal::spawn(w, &["apply", arg(&copy), "--yes"]);
    t.expect("type the service instance id");
    t.answer(&Answer::Line(&instance));
    let (text, code) = t.finish();
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        unit1(w),
        ("empty".to_owned(), "empty".to_owned(), true),
        "unit 1 zeroized"
    );
}

#[test]
fn a_unit_committed_with_another_value_refuses_the_commit_plan() {
    let s = setup();
    let w = &s.operator;
    let select = |nums: &[&str]| {
        w.ok(&["cryptounit-rm", "1", "2", "3", "4"]);
        w.ok(&[&["cryptounit-add"], nums].concat());
    };
    // Units 1 and 3 commit one value; unit 3 clears it and, with 2 and 4, loads another.
    load_new(&s, &[1]);
    select(&["1", "3"]);
    let commit = plan(w, "cryptounit-mk-commit", &[]);
    apply(&s, &s.bob.approve(&s.alice.approve(&commit)), &[]);
    select(&["3"]);
    apply(
        &s,
        &s.alice.approve(&plan(w, "cryptounit-mk-clrnew", &[])),
        &[],
    );
    load_new(&s, &[2, 4]);

    // Committing on every unit: unit 1 holds the other value committed already.
    select(&["1", "2", "3", "4"]);
    let out = w.path().join("commit-all.json");
    let before = w.snapshot();
    let args = ["plan", "cryptounit-mk-commit", "--out", arg(&out)];
    snap::assert_snapshot(
        "approvals_registers_commit_other_value",
        &failure(&s, w, &args, 1),
    );
    assert!(!out.exists());
    assert_eq!(before, w.snapshot(), "nothing changed");
}
