//! Multi-round ceremony files through the real binary: `tke plan auto-init
//! --admin-cert …` by an operator who holds no key, approved round by round by two
//! administrators on their own workstation directories, applied from the operator's;
//! files edited between rounds refused by `approve` and `apply`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    fs,
    path::{Path, PathBuf},
};

use common::{snap, Workstation};
use serde_json::Value;
use tke_proto::{
    der::{Decode, Encode},
    AdminCommand, Command, Register,
};

/// An administrator's own workstation with its key only, and its secrets file.
fn admin(name: &str, password: &str) -> (Workstation, String) {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let s = w.file_keys(&[(name, password)]);
    (w, s)
}

/// The administrator's certificate file (`NAME-XXXXXXXX.crt.pem`), as mailed to the
/// operator.
fn certificate(admin: &Workstation, to: &Workstation) -> PathBuf {
    let from = fs::read_dir(admin.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_str().unwrap().ends_with(".crt.pem"))
        .unwrap();
    let to = to.path().join(from.file_name().unwrap());
    fs::copy(&from, &to).unwrap();
    to
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn tohex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Copies `from` into `w`'s directory as `ceremony.json` (as if mailed).
fn mail(from: &Path, w: &Workstation) -> PathBuf {
    let to = w.path().join("ceremony.json");
    fs::copy(from, &to).unwrap();
    to
}

/// The administrator approves the mailed file on their own workstation and mails it back.
fn approve(admin: &(Workstation, String), name: &str, file: &Path) -> String {
    let copy = mail(file, &admin.0);
    let out = admin.0.ok(&[
        "--secrets",
        &admin.1,
        "approve",
        arg(&copy),
        "--admin",
        name,
        "--yes",
    ]);
    fs::copy(&copy, file).unwrap();
    out
}

fn json(file: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(file).unwrap()).unwrap()
}

/// Writes `file` with `edit` applied to its JSON, into `to`.
fn edited(file: &Path, to: &Path, edit: impl Fn(&mut Value)) {
    let mut v = json(file);
    edit(&mut v);
    fs::write(to, v.to_string()).unwrap();
}

/// Every unit's (current state, current VP, new state).
fn registers(w: &Workstation) -> Vec<(String, String, String)> {
    w.compare_json()
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
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

/// `approve` and `apply` both refuse `file` (exit 1), naming `needle`, and change nothing.
fn refused_by_both(
    operator: &Workstation,
    alice: &(Workstation, String),
    file: &Path,
    needle: &str,
) -> (String, String) {
    let copy = mail(file, &alice.0);
    let before = fs::read(&copy).unwrap();
    let approve = alice.0.fails(
        &[
            "--secrets",
            &alice.1,
            "approve",
            arg(&copy),
            "--admin",
            "alice",
            "--yes",
        ],
        1,
    );
    assert!(approve.contains(needle), "{approve}");
    assert_eq!(fs::read(&copy).unwrap(), before, "a refused approve wrote");
    let apply = operator.fails(&["apply", arg(file), "--yes"], 1);
    assert!(apply.contains(needle), "{apply}");
    (
        snap::redact_paths(&approve, &[(alice.0.path(), "[WS]")]),
        snap::redact_paths(&apply, &[(operator.path(), "[WS]")]),
    )
}

#[test]
fn two_administrators_approve_auto_init_round_by_round_on_their_own_workstations() {
    let operator = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    operator.ok(&["local", "init"]);
    operator.ok(&["cryptounit-add", "1", "2", "3", "4"]);
    let alice = admin("alice", "alice-password-1");
    let bob = admin("bob", "bob-password-22");
    let (a_cert, b_cert) = (
        certificate(&alice.0, &operator),
        certificate(&bob.0, &operator),
    );
    let file = operator.path().join("init.json");
    let out = operator.ok(&[
        "plan",
        "auto-init",
        "--instance",
        "1",
        "--sig-threshold",
        "2",
        "--rev-threshold",
        "2",
        "--admin-cert",
        arg(&a_cert),
        "--admin-cert",
        arg(&b_cert),
        "--out",
        arg(&file),
    ]);
    assert!(
        out.contains("Its 3 rounds are approved and applied"),
        "{out}"
    );
    let v = json(&file);
    assert_eq!(
        (v["version"].as_u64(), v["kind"].as_str()),
        (Some(2), Some("auto-init"))
    );
    assert_eq!(v["rounds"].as_array().unwrap().len(), 1);
    assert_eq!(v["rounds"][0]["state"], "planned");
    // The planner held no key and the file holds no secret: certificates only.
    let text = fs::read_to_string(&file).unwrap();
    assert!(!text.contains("PRIVATE"), "{text}");

    // Nothing approved yet: nothing is sent, and the units stay in imprint mode.
    let stderr = operator.fails(&["apply", arg(&file), "--yes"], 4);
    assert!(stderr.contains("round 1 of 3 needs approvals"), "{stderr}");
    assert!(registers(&operator).iter().all(|r| r.0 == "empty"));

    let mut vp = String::new();
    for round in 1..=3 {
        let out = approve(&alice, "alice", &file);
        assert!(
            out.contains(&format!("round {round} of 3")) || out.contains("approved"),
            "{out}"
        );
        // One approval is not enough for the signature threshold 2 (round 1's admin
        // commands need none in imprint mode, its thresholds command needs two).
        let stderr = operator.fails(&["apply", arg(&file), "--yes"], 4);
        assert!(
            stderr.contains(&format!("round {round} of 3 needs approvals")),
            "{stderr}"
        );
        assert!(stderr.contains("may still approve: bob"), "{stderr}");
        approve(&bob, "bob", &file);

        if round == 1 {
            // Before round 1 is applied, an edit of the parameters is caught offline:
            // round 1 is no longer the one they give.
            let bad = operator.path().join("edited.json");
            edited(&file, &bad, |v| {
                v["params"]["sig_threshold"] = Value::from(1)
            });
            let (approve_err, _) = refused_by_both(&operator, &alice, &bad, "round 1");
            snap::assert_snapshot("approvals_rounds_edited_params", &approve_err);
        }

        let o = operator.run(&["apply", arg(&file), "--yes"]);
        let stdout = String::from_utf8_lossy(&o.stdout);
        let stderr = String::from_utf8_lossy(&o.stderr);
        if round < 3 {
            assert_eq!(o.status.code(), Some(4), "{stdout}{stderr}");
            assert!(
                stderr.contains(&format!(
                    "round {round} of 3 applied; the units' answers and round {} are in",
                    round + 1
                )),
                "{stderr}"
            );
            let v = json(&file);
            assert_eq!(v["rounds"][round - 1]["state"], "applied");
            assert_eq!(v["rounds"][round]["state"], "planned");
        } else {
            assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
            assert!(stdout.contains("OK"), "{stdout}");
        }

        if round == 1 {
            let v = json(&file);
            vp = v["rounds"][0]["commands"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["summary"] == "generate a random master key")
                .unwrap()["answer"]
                .as_str()
                .unwrap()
                .to_owned();
            // Between rounds: a recorded answer edited (one byte of an importer key) is
            // refused offline: it is no longer certified by the unit's device key.
            let bad = operator.path().join("edited.json");
            edited(&file, &bad, |v| {
                let c = v["rounds"][0]["commands"]
                    .as_array_mut()
                    .unwrap()
                    .iter_mut()
                    .find(|c| c["summary"] == "generate a single-use importer key")
                    .unwrap();
                let a = c["answer"].as_str().unwrap().to_owned();
                let flipped = if a.ends_with('0') { "1" } else { "0" };
                c["answer"] = Value::from(format!("{}{flipped}", &a[..a.len() - 1]));
            });
            let (approve_err, apply_err) =
                refused_by_both(&operator, &alice, &bad, "the recorded answer is refused");
            snap::assert_snapshot("approvals_rounds_edited_answer_approve", &approve_err);
            snap::assert_snapshot("approvals_rounds_edited_answer_apply", &apply_err);

            // Round 2's export re-encoded to another register: the summary still
            // matches the bytes and no approval is broken (none yet), but the round is
            // not the one the parameters and round 1's answers give.
            edited(&file, &bad, |v| {
                let c = &mut v["rounds"][1]["commands"][0];
                let der = unhex(c["command"].as_str().unwrap());
                let ac = AdminCommand::from_der(&der).unwrap();
                let Command::ExportMkBatch(mut reqs) =
                    Command::from_wire(ac.command, ac.input.as_bytes()).unwrap()
                else {
                    panic!("round 2 is the export");
                };
                reqs[0].register = Register::New;
                let other = Command::ExportMkBatch(reqs)
                    .to_wire(ac.unit_id, ac.counter)
                    .unwrap();
                c["command"] = Value::from(tohex(&other.to_der().unwrap()));
            });
            let (approve_err, _) = refused_by_both(
                &operator,
                &alice,
                &bad,
                "are not those the ceremony's parameters and the answers of the earlier rounds give",
            );
            snap::assert_snapshot("approvals_rounds_edited_round", &approve_err);
        }
    }

    // Every unit holds the one generated key, current and Valid; the new registers are
    // empty.
    assert_eq!(vp.len(), 64);
    let regs = registers(&operator);
    assert_eq!(regs.len(), 4);
    for r in &regs {
        assert_eq!(
            (r.0.as_str(), r.1.as_str(), r.2.as_str()),
            ("valid", vp.as_str(), "empty")
        );
    }
    // Applying again sends nothing; approving again adds nothing.
    let out = operator.ok(&["apply", arg(&file), "--yes"]);
    assert!(out.contains("applied already"), "{out}");
    let out = approve(&alice, "alice", &file);
    assert!(out.contains("Every round of this file is applied"), "{out}");
}
