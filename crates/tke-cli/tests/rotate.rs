//! Master key rotation through the real binary, on the embedded fleet: `auto-mk-rotate`
//! after `auto-init` (the new value in every current register, the new registers empty,
//! the vendor's milestone lines), every refusal of its pre-check with its snapshot and a
//! check that nothing changed; the process killed with SIGKILL at each crash point, a
//! plain rerun refused naming `--resume`, and `--resume` finishing with the value the
//! interrupted run generated; `cryptounit-mk-rotate` after a key-part load and commit,
//! interrupted and resumed the same way; the workstation's journal of an interrupted
//! rotation checked against the units (another rotation's or other units' journal
//! refused, a journal ahead of the units explained and the units followed, a missing one
//! said and the resume finished from the units).
//!
//! These fleets' key storage is empty: the crash points inside the re-encryption, and
//! rotations with keys stored, are tested in `key_storage.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    terminal::{
        Answer::{Hidden, Line},
        Terminal,
    },
    Workstation,
};
use serde_json::Value;

/// The vendor's milestones, verbatim.
const COMMITTED: &str = common::ROTATION_COMMITTED;
const REWRAPPED: &str = common::ROTATION_REWRAPPED;
const PW: &[(&str, &str)] = common::PASSWORDS;

fn tke() -> Workstation {
    Workstation::new(env!("CARGO_BIN_EXE_tke"))
}

/// A fleet of 2 operational and 2 recovery units initialized by `auto-init` with alice
/// and bob, thresholds 2/2; the secrets file's path.
fn initialized() -> (Workstation, String) {
    let w = tke();
    w.ok(&["local", "init"]);
    let s = w.file_keys(&PW[..2]);
    w.auto_init(&s, (2, 2), &["alice", "bob"]);
    (w, s)
}

/// A register as `cryptounit-compare --output json` shows it: state and VP (or null).
type Reg = (String, Value);

/// Every unit's (type, current register, new register) as `cryptounit-compare` shows
/// them: `("recovery", ("valid", "VP"), ("empty", null))`.
fn registers(w: &Workstation) -> Vec<(String, Reg, Reg)> {
    let reg = |v: &Value| (v["state"].as_str().unwrap().to_owned(), v["vp"].clone());
    w.compare_json()
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["type"].as_str().unwrap().to_owned(),
                reg(&u["current_mk"]),
                reg(&u["new_mk"]),
            )
        })
        .collect()
}

/// Asserts that every unit holds one current value, Valid, and an empty new register;
/// returns that value.
fn one_current_value(w: &Workstation) -> String {
    let regs = registers(w);
    let vp = regs[0].1 .1.as_str().unwrap().to_owned();
    for (t, current, new) in &regs {
        assert_eq!(
            current,
            &("valid".to_owned(), Value::from(vp.clone())),
            "{t}"
        );
        assert_eq!(new, &("empty".to_owned(), Value::Null), "{t}");
    }
    vp
}

/// Runs `args` expecting the refusal snapshotted as `name` (exit `code`), and checks that
/// no file of the workstation (the embedded fleet's units included) changed.
fn refused(w: &Workstation, name: &str, args: &[&str], code: i32) {
    let before = w.snapshot();
    w.check(name, args, code, &[]);
    assert_eq!(before, w.snapshot(), "{name}: something changed");
}

/// The lines of `out` that are milestones of a rotation, in order.
fn milestones(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| {
            [
                COMMITTED,
                REWRAPPED,
                "Master key rotation s",
                "Generating",
                "Committing",
            ]
            .iter()
            .any(|m| l.starts_with(m))
        })
        .collect()
}

#[test]
fn auto_mk_rotate_checks_everything_first_then_rotates_every_unit() {
    let (w, s) = initialized();
    let old = one_current_value(&w);

    // Every refusal changes nothing.
    refused(
        &w,
        "rotate_instance_does_not_exist",
        &[
            "--secrets",
            &s,
            "auto-mk-rotate",
            "--instance",
            "2",
            "--yes",
        ],
        1,
    );
    // The signature threshold is 2: one key is too few to export and commit.
    refused(
        &w,
        "rotate_too_few_signers",
        &[
            "--secrets",
            &s,
            "auto-mk-rotate",
            "--signer",
            "alice",
            "--yes",
        ],
        1,
    );
    refused(
        &w,
        "rotate_without_a_terminal",
        &["--secrets", &s, "auto-mk-rotate"],
        1,
    );
    refused(
        &w,
        "rotate_nothing_to_resume",
        &["--secrets", &s, "auto-mk-rotate", "--resume", "--yes"],
        0,
    );
    // The key-part flow needs the new value committed everywhere first...
    refused(
        &w,
        "rotate_key_parts_nothing_loaded",
        &["--secrets", &s, "cryptounit-mk-rotate", "--yes"],
        1,
    );
    // ... and every unit of the instance selected.
    w.ok(&["cryptounit-rm", "4"]);
    refused(
        &w,
        "rotate_key_parts_not_all_selected",
        &["--secrets", &s, "cryptounit-mk-rotate", "--yes"],
        1,
    );
    assert_eq!(one_current_value(&w), old);

    // The rotation: the milestones in the vendor's order, then one new value everywhere.
    let out = w.ok(&["--secrets", &s, "auto-mk-rotate", "--yes"]);
    assert_eq!(
        milestones(&out),
        [
            "Generating a random master key value....",
            "Committing the new master key value....",
            COMMITTED,
            REWRAPPED,
            "Master key rotation successful.",
        ],
        "{out}"
    );
    // The embedded fleet's instance has key storage (empty here): it is re-encrypted.
    assert!(
        out.contains("Re-encrypting key storage: 0 of 0 keys"),
        "{out}"
    );
    assert!(
        out.contains("Transferring the master key value to 3 of 3 crypto units...."),
        "{out}"
    );
    assert!(out.contains("Signed by: alice, bob"), "{out}");
    let new = one_current_value(&w);
    assert_ne!(new, old);
    // auto-* commands select the whole instance again.
    let units = w.ok(&["cryptounits", "--output", "json"]);
    let units: Value = serde_json::from_str(&units).unwrap();
    assert!(
        units
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["selected"] == true),
        "{units}"
    );

    // Again, for scripts: JSON naming both values.
    let out = w.ok(&[
        "--secrets",
        &s,
        "--output",
        "json",
        "auto-mk-rotate",
        "--yes",
    ]);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["from"], new.as_str());
    assert_eq!(report["to"], one_current_value(&w).as_str());
    assert_ne!(report["to"], new.as_str());
    assert_eq!(report["units"], serde_json::json!([1, 2, 3, 4]));
    assert_eq!(report["resumed_from"], Value::Null);
    assert_eq!(report["key_storage"], true);
    assert_eq!(
        report["reencrypted"],
        serde_json::json!({"done": 0, "total": 0})
    );
    assert_eq!(report["signed_by"], serde_json::json!(["alice", "bob"]));
}

#[test]
fn auto_mk_rotate_killed_at_each_step_resumes_with_the_same_new_key() {
    let (w, s) = initialized();
    let args = ["--secrets", s.as_str(), "auto-mk-rotate", "--yes"];
    let resume = [
        "--secrets",
        s.as_str(),
        "auto-mk-rotate",
        "--yes",
        "--resume",
    ];
    for (i, step) in [
        "after-generate",
        "during-transfer",
        "after-transfer",
        "after-commit",
        "during-setimm",
        "after-setimm",
    ]
    .into_iter()
    .enumerate()
    {
        let old = one_current_value(&w);
        let point = format!("auto-mk-rotate:{step}");
        let out = w.crash(&point, &args);
        assert!(w.journal("auto-mk-rotate").is_some(), "{point}: no journal");
        // The first milestone is printed once every unit holds the new value committed.
        let committed = !matches!(
            step,
            "after-generate" | "during-transfer" | "after-transfer"
        );
        assert_eq!(out.contains(COMMITTED), committed, "{point}:\n{out}");

        // The new value is in the recovery unit that generated it (unit 3), or already
        // current in some units; no unit holds another one.
        let regs = registers(&w);
        let new = match &regs[2] {
            (_, _, (_, vp)) if !vp.is_null() => vp.as_str().unwrap().to_owned(),
            (_, (_, vp), _) => vp.as_str().unwrap().to_owned(),
        };
        assert_ne!(new, old, "{point}");
        for (t, current, staged) in &regs {
            let (c, n) = (current.1.as_str().unwrap(), staged.1.as_str());
            assert!(c == old || c == new, "{point}: {t} holds {c}");
            assert!(
                n.is_none() || n == Some(new.as_str()),
                "{point}: {t} holds {n:?}"
            );
            // Never set immediately before every unit held the new value committed.
            assert!(c == old || committed, "{point}: {t} promoted early");
        }

        if step == "after-setimm" {
            // Every unit was promoted: there is nothing left but to say so.
            let out = w.ok(&resume);
            assert!(out.contains("There is nothing to resume."), "{out}");
        } else {
            // A plain rerun would make a second new key: refused, naming --resume.
            let before = w.snapshot();
            let o = w.run(&args);
            common::assert_failed(&o, 1, &args);
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert!(
                stderr.contains("`tke auto-mk-rotate --resume`"),
                "{point}: {stderr}"
            );
            if i == 0 {
                w.check("rotate_interrupted_after_generate", &args, 1, &[]);
            }
            assert_eq!(
                before,
                w.snapshot(),
                "{point}: the refused rerun changed something"
            );

            let out = w.ok(&resume);
            assert!(out.contains("was interrupted"), "{point}:\n{out}");
            assert!(out.contains(REWRAPPED), "{point}:\n{out}");
            assert!(
                out.contains("Master key rotation successful."),
                "{point}:\n{out}"
            );
            // Resuming never generates a second key.
            assert!(!out.contains("Generating"), "{point}:\n{out}");
        }
        assert_eq!(one_current_value(&w), new, "{point}");
        assert_eq!(
            w.journal("auto-mk-rotate"),
            None,
            "{point}: the journal is left"
        );
    }
}

/// Loads the parts into every selected unit and commits them; the new value's VP.
fn load_and_commit(w: &Workstation, s: &str, parts: [&str; 2]) -> String {
    w.ok(&[
        "--secrets",
        s,
        "cryptounit-mk-load",
        "--part",
        parts[0],
        "--part",
        parts[1],
    ]);
    w.ok(&["--secrets", s, "cryptounit-mk-commit"]);
    registers(w)[0].2 .1.as_str().unwrap().to_owned()
}

#[test]
fn cryptounit_mk_rotate_after_a_key_part_load_and_commit() {
    // An instance without recovery units, initialized from master key parts.
    let w = tke();
    w.ok(&["local", "init", "--recovery", "0", "--failover", "2"]);
    w.file_keys(&PW[..2]);
    // The parts' passwords too.
    let s = w.secrets(PW).to_str().unwrap().to_owned();
    w.ok(&["cryptounit-add", "1", "2", "3", "4"]);
    w.install_admins(&s, &["alice", "bob"], (2, 2));
    for part in ["part a", "part b", "part c"] {
        w.ok(&["--secrets", &s, "mk-add", "--random", "--description", part]);
    }
    let first = load_and_commit(&w, &s, ["part a", "part b"]);
    w.ok(&["--secrets", &s, "cryptounit-mk-setimm", "--yes"]);
    assert_eq!(one_current_value(&w), first);

    // Auto rotation needs a recovery unit.
    refused(
        &w,
        "rotate_auto_no_recovery_unit",
        &["--secrets", &s, "auto-mk-rotate", "--yes"],
        1,
    );
    // Loaded but not committed: commit first.
    w.ok(&[
        "--secrets",
        &s,
        "cryptounit-mk-load",
        "--part",
        "part c",
        "--part",
        "part b",
    ]);
    refused(
        &w,
        "rotate_key_parts_not_committed",
        &["--secrets", &s, "cryptounit-mk-rotate", "--yes"],
        1,
    );
    // Nor is there anything for --resume to finish: the key is not committed everywhere.
    refused(
        &w,
        "rotate_key_parts_resume_not_committed",
        &["--secrets", &s, "cryptounit-mk-rotate", "--yes", "--resume"],
        1,
    );
    w.ok(&["--secrets", &s, "cryptounit-mk-commit"]);
    let second = registers(&w)[0].2 .1.as_str().unwrap().to_owned();

    // Killed after the first unit was promoted: the plain rerun is refused, --resume
    // promotes the others.
    let args = ["--secrets", s.as_str(), "cryptounit-mk-rotate", "--yes"];
    let out = w.crash("cryptounit-mk-rotate:during-setimm", &args);
    assert!(out.contains(REWRAPPED), "{out}");
    let promoted = registers(&w)
        .iter()
        .filter(|(_, c, _)| c.1 == second.as_str())
        .count();
    assert_eq!(promoted, 1);
    refused(&w, "rotate_key_parts_interrupted", &args, 1);
    let out = w.ok(&["--secrets", &s, "cryptounit-mk-rotate", "--yes", "--resume"]);
    assert!(
        out.contains("Setting the new master key value immediately in 3 crypto unit(s)"),
        "{out}"
    );
    assert_eq!(one_current_value(&w), second);

    // A plain key-part rotation: one signature, the vendor's messages.
    let third = load_and_commit(&w, &s, ["part a", "part c"]);
    let out = w.ok(&["--secrets", &s, "cryptounit-mk-rotate", "--yes"]);
    assert_eq!(
        milestones(&out),
        [
            "Master key rotation started.",
            REWRAPPED,
            "Master key rotation successful."
        ],
        "{out}"
    );
    assert!(!out.contains("was interrupted"), "{out}");
    assert!(out.contains("Signed by: alice\n"), "{out}");
    assert_eq!(one_current_value(&w), third);
    assert!(![first, second].contains(&third));
}

#[test]
fn auto_mk_rotate_asks_for_the_instance_confirmation_and_passwords_on_a_terminal() {
    let w = tke();
    w.ok(&["local", "init", "--instances", "2"]);
    let s = w.file_keys(&PW[..2]);
    w.ok(&[
        "--secrets",
        &s,
        "auto-init",
        "--instance",
        "2",
        "--sig-threshold",
        "2",
        "--rev-threshold",
        "1",
        "--admin",
        "alice",
        "--admin",
        "bob",
        "--yes",
    ]);
    let old = one_current_value(&w);

    let mut t = Terminal::spawn(&w, &["auto-mk-rotate"]);
    for (at, answer) in [
        ("More than one service instance is assigned", None),
        (
            "Enter the INSTANCE NUM of the service instance you want to rotate the master key of.",
            Some(Line("2")),
        ),
        ("Rotate the master key of service instance", None),
        ("(y/N)", Some(Line("y"))),
        ("alice (", Some(Hidden("alice-password-1"))),
        ("bob (", Some(Hidden("bob-password-22"))),
        (REWRAPPED, None),
    ] {
        t.expect(at);
        if let Some(a) = answer {
            t.answer(&a);
        }
    }
    let (text, code) = t.finish();
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("Master key rotation successful."), "{text}");
    // The instance rotated (and is the selection `cryptounit-compare` shows).
    let new = one_current_value(&w);
    assert_ne!(new, old);
}

/// The journal file of the one `auto-mk-rotate` left in `w`.
fn rotate_journal(w: &Workstation) -> std::path::PathBuf {
    w.journal_path("auto-mk-rotate")
        .expect("a journal of auto-mk-rotate")
}

#[test]
fn a_rotation_journal_is_checked_against_the_units_which_stay_the_truth() {
    let (w, s) = initialized();
    let args = ["--secrets", s.as_str(), "auto-mk-rotate", "--yes"];
    let resume = [&args[..], &["--resume"]].concat();
    w.crash("auto-mk-rotate:after-transfer", &args);
    let path = rotate_journal(&w);
    let kept = std::fs::read_to_string(&path).unwrap();
    let journal: Value = serde_json::from_str(&kept).unwrap();
    let from = journal["params"]["from"].as_str().unwrap().to_owned();
    let to = journal["steps"][0]["detail"].as_str().unwrap().to_owned();
    let unit = journal["params"]["units"][0].as_str().unwrap().to_owned();

    // The journal of another rotation: refused, naming the file and what differs;
    // nothing changed (the journal left as it was).
    let other = "00".repeat(32);
    for (name, from_text, to_text) in [
        (
            "rotate_journal_of_another_rotation",
            from.as_str(),
            other.as_str(),
        ),
        (
            "rotate_journal_from_another_key",
            other.as_str(),
            to.as_str(),
        ),
        ("rotate_journal_of_other_units", from.as_str(), to.as_str()),
    ] {
        let mut text = kept.replace(&from, from_text).replace(&to, to_text);
        if name.ends_with("other_units") {
            text = text.replace(&unit, "00000000-0000-4000-8000-000000000000");
        }
        std::fs::write(&path, &text).unwrap();
        refused(&w, name, &resume, 1);
    }
    // A journal cut short (or of another version) is not guessed at.
    std::fs::write(&path, &kept[..kept.len() / 2]).unwrap();
    refused(&w, "rotate_journal_corrupt", &resume, 1);
    std::fs::write(&path, &kept).unwrap();

    // Someone cleared unit 1's new register after the run stopped: the journal records
    // the transfer done, the units show it is not; the units are followed and the key
    // copied to unit 1 again.
    w.ok(&["cryptounit-rm", "1", "2", "3", "4"]);
    w.ok(&["cryptounit-add", "1"]);
    w.ok(&["--secrets", &s, "cryptounit-mk-clrnew"]);
    let out = w.ok(&resume);
    assert!(
        out.contains(
            "The journal records step key-transferred done, but the new master key was generated in recovery crypto unit 3 and is in the new master key register of 3 of 4 crypto units (2, 3, 4)"
        ),
        "{out}"
    );
    assert!(out.contains("Master key rotation successful."), "{out}");
    assert_eq!(one_current_value(&w), to);
    assert!(!path.exists(), "the journal is left");

    // No journal (another workstation stopped, or it was removed): the units and key
    // storage allow the resume, which says so and goes on; a journal is kept from there
    // and removed at the end.
    w.crash("auto-mk-rotate:after-commit", &args);
    std::fs::remove_file(rotate_journal(&w)).unwrap();
    let out = w.ok(&resume);
    assert!(
        out.contains(&format!(
            "No journal of an interrupted auto-mk-rotate of service instance {} is in {} (it ran on another workstation, or its journal was removed): resuming from what the crypto units and key storage hold.",
            journal["instance"].as_str().unwrap(),
            w.path().display()
        )),
        "{out}"
    );
    assert!(out.contains("Master key rotation successful."), "{out}");
    assert_eq!(w.journal("auto-mk-rotate"), None);

    // An abandoned rotation: killed after generating, then the new key cleared by hand.
    // The next rotation says so, removes that journal, and runs with a journal of its own.
    w.crash("auto-mk-rotate:after-generate", &args);
    w.ok(&["cryptounit-rm", "1", "2", "3", "4"]);
    w.ok(&["cryptounit-add", "3"]);
    w.ok(&["--secrets", &s, "cryptounit-mk-clrnew"]);
    let out = w.ok(&args);
    assert!(
        out.contains("was interrupted after step key-generated at ")
            && out.contains("any more: the rotation was abandoned. The journal is removed."),
        "{out}"
    );
    assert!(out.contains("Master key rotation successful."), "{out}");
    assert_eq!(w.journal("auto-mk-rotate"), None);

    // A journal left by a rotation that finished (killed after its last command) stops
    // no later rotation: it is said and removed.
    w.crash("auto-mk-rotate:after-setimm", &args);
    let done = one_current_value(&w);
    let out = w.ok(&args);
    assert!(
        out.contains("the crypto units show the rotation finished. The journal is removed."),
        "{out}"
    );
    assert!(out.contains("Master key rotation successful."), "{out}");
    assert_ne!(one_current_value(&w), done);
    assert_eq!(w.journal("auto-mk-rotate"), None);
}
