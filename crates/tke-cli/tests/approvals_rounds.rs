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
/// operator, who keeps it in `dir` (a directory of its own: a certificate without its
/// key in the workstation directory is warned about).
fn certificate(admin: &Workstation, dir: &Path) -> PathBuf {
    let from = fs::read_dir(admin.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_str().unwrap().ends_with(".crt.pem"))
        .unwrap();
    fs::create_dir_all(dir).unwrap();
    let to = dir.join(from.file_name().unwrap());
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

/// The file's command `c` replaced by `change` of it, for the same unit and counter (a
/// valid command whose summary may well be the same).
fn recoded(c: &mut Value, change: impl FnOnce(Command) -> Command) {
    let ac = AdminCommand::from_der(&unhex(c["command"].as_str().unwrap())).unwrap();
    let command = change(Command::from_wire(ac.command, ac.input.as_bytes()).unwrap());
    let other = command.to_wire(ac.unit_id, ac.counter).unwrap();
    c["command"] = Value::from(tohex(&other.to_der().unwrap()));
}

/// The verification pattern the recovery unit answered in round 1 (hex).
fn generated_vp(v: &Value) -> String {
    v["rounds"][0]["commands"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["summary"] == "generate a random master key")
        .unwrap()["answer"]
        .as_str()
        .unwrap()
        .to_owned()
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
    let mallory = admin("mallory", "mallory-password-4444");
    let certs = operator.path().join("certs");
    let (a_cert, b_cert) = (certificate(&alice.0, &certs), certificate(&bob.0, &certs));
    // Declaratively, a service instance in imprint mode with a master key wanted is
    // the whole auto-init.
    let desired = certs.join("instance.toml");
    fs::write(
        &desired,
        format!(
            "admins = [{:?}, {:?}]\nsig_threshold = 2\nrev_threshold = 2\nmaster_key_present = true\n",
            a_cert.file_name().unwrap().to_str().unwrap(),
            b_cert.file_name().unwrap().to_str().unwrap()
        ),
    )
    .unwrap();
    let declared = operator.path().join("declared.json");
    operator.ok(&["plan", "--desired", arg(&desired), "--out", arg(&declared)]);
    assert_eq!(json(&declared)["kind"], "auto-init");

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
        // Every round is shown, marked; only the current one is signed.
        assert!(
            out.contains(&format!("{round}/3"))
                && out.contains("alice (")
                && out.contains("approved"),
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
        if round == 1 {
            // An approval by a key that is not one of the plan's administrators does not
            // count: nothing is sent.
            approve(&mallory, "mallory", &file);
            let stderr = operator.fails(&["apply", arg(&file), "--yes"], 4);
            assert!(
                stderr.contains("not counted, not administrators of this crypto unit: mallory"),
                "{stderr}"
            );
            assert!(registers(&operator).iter().all(|r| r.0 == "empty"));
        }
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
            vp = generated_vp(&json(&file));
            // The other plan of the same instance (the declarative one) is stale now:
            // every unit's counter moved; it names each unit and sends nothing.
            let stale = operator.fails(&["apply", arg(&declared), "--yes"], 1);
            assert!(stale.contains("Re-plan"), "{stale}");
            for num in 1..=4 {
                assert!(stale.contains(&format!("crypto unit {num} (")), "{stale}");
            }
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
                recoded(&mut v["rounds"][1]["commands"][0], |c| {
                    let Command::ExportMkBatch(mut reqs) = c else {
                        panic!("round 2 is the export");
                    };
                    reqs[0].register = Register::New;
                    Command::ExportMkBatch(reqs)
                });
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

/// The operator's workstation, its instance initialized directly by alice and bob
/// (thresholds 2/1, every unit selected); `then` runs with their keys and the secrets
/// file `s` on it; then the keys are removed from it.
fn initialized(
    alice: &(Workstation, String),
    bob: &(Workstation, String),
    then: impl FnOnce(&Workstation, &str),
) -> Workstation {
    let operator = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    operator.ok(&["local", "init"]);
    operator.ok(&["cryptounit-add", "1", "2", "3", "4"]);
    let copied: Vec<PathBuf> = [alice.0.path(), bob.0.path()]
        .iter()
        .flat_map(|d| fs::read_dir(d).unwrap().map(|e| e.unwrap().path()))
        .filter(|p| {
            let n = p.to_str().unwrap();
            n.ends_with(".key.pem") || n.ends_with(".crt.pem")
        })
        .map(|from| {
            let to = operator.path().join(from.file_name().unwrap());
            fs::copy(&from, &to).unwrap();
            to
        })
        .collect();
    let s = operator.secrets(&[
        ("alice", "alice-password-1"),
        ("bob", "bob-password-22"),
        ("\"part a\"", "part-a-password-1"),
        ("\"part b\"", "part-b-password-22"),
    ]);
    operator.auto_init(s.to_str().unwrap(), (2, 1), &["alice", "bob"]);
    then(&operator, s.to_str().unwrap());
    for f in copied {
        fs::remove_file(f).unwrap();
    }
    operator
}

/// [`initialized`], units 1 and 2 (operational) selected, and two master key parts
/// "part a" and "part b" held by the operator (the planner, who needs their passwords to
/// seal them); and its secrets file (the parts' passwords only).
fn loaded_operator(
    alice: &(Workstation, String),
    bob: &(Workstation, String),
) -> (Workstation, String) {
    let operator = initialized(alice, bob, |_, _| {});
    let s = operator.secrets(&[
        ("\"part a\"", "part-a-password-1"),
        ("\"part b\"", "part-b-password-22"),
    ]);
    let s = s.to_str().unwrap().to_owned();
    for part in ["part a", "part b"] {
        operator.ok(&["--secrets", &s, "mk-add", "--random", "--description", part]);
    }
    operator.ok(&["cryptounit-rm", "3", "4"]);
    (operator, s)
}

#[test]
fn a_key_part_load_is_planned_sealed_by_the_planner_and_approved_round_by_round() {
    let alice = admin("alice", "alice-password-1");
    let bob = admin("bob", "bob-password-22");
    let (operator, s) = loaded_operator(&alice, &bob);
    let before = registers(&operator);
    let file = operator.path().join("load.json");
    // A recovery unit selected: refused as the direct load refuses it, no file written.
    let plan = [
        "plan",
        "cryptounit-mk-load",
        "--part",
        "part a",
        "--part",
        "part b",
        "--out",
        arg(&file),
    ];
    operator.ok(&["cryptounit-add", "3"]);
    let refused = operator.fails(&plan, 1);
    snap::assert_snapshot(
        "approvals_rounds_mk_load_recovery_unit",
        &snap::redact_paths(&refused, &[(operator.path(), "[WS]")]),
    );
    assert!(!file.exists());
    operator.ok(&["cryptounit-rm", "3"]);
    // Round 1 needs no password: only the parts' verification patterns.
    operator.ok(&plan);
    let v = json(&file);
    assert_eq!(v["kind"], "mk-load");
    assert_eq!(v["params"]["parts"].as_array().unwrap().len(), 2);

    // Round 2 cannot be sealed before round 1 ran.
    let stderr = operator.fails(
        &[
            "--secrets",
            &s,
            "plan",
            "cryptounit-mk-load",
            "--seal",
            arg(&file),
        ],
        1,
    );
    assert!(stderr.contains("cannot be sealed"), "{stderr}");

    // One approval (generateImporter needs one signature); apply runs round 1, then
    // stops: round 2 is the planner's.
    approve(&alice, "alice", &file);
    let stderr = operator.fails(&["apply", arg(&file), "--yes"], 4);
    assert!(
        stderr.contains("round 1 of 2 applied") && stderr.contains("round 2 of 2 is not made yet"),
        "{stderr}"
    );
    snap::assert_snapshot(
        "approvals_rounds_mk_load_awaits_planner",
        &snap::redact_paths(&stderr, &[(operator.path(), "[WS]")]),
    );
    let out = approve(&alice, "alice", &file);
    assert!(out.contains("There is nothing to approve yet"), "{out}");
    assert_eq!(registers(&operator), before, "round 1 changes no register");

    let out = operator.ok(&[
        "--secrets",
        &s,
        "plan",
        "cryptounit-mk-load",
        "--seal",
        arg(&file),
    ]);
    assert!(out.contains("Round 2"), "{out}");
    let text = fs::read_to_string(&file).unwrap();
    assert!(
        !text.contains("part-a-password"),
        "the file holds no secret"
    );

    // A sealed part swapped for one claiming another verification pattern: its summary
    // still matches, nobody approved it yet, but it is not the planned part.
    let bad = operator.path().join("edited.json");
    edited(&file, &bad, |v| {
        recoded(&mut v["rounds"][1]["commands"][0], |c| {
            let Command::ImportMkParts(mut req) = c else {
                panic!("round 2 is the load");
            };
            req.parts.swap(0, 1);
            Command::ImportMkParts(req)
        });
    });
    let (approve_err, _) = refused_by_both(
        &operator,
        &alice,
        &bad,
        "round 2: crypto unit 1's commands are not those",
    );
    snap::assert_snapshot("approvals_rounds_mk_load_edited_parts", &approve_err);

    approve(&bob, "bob", &file);
    let out = operator.ok(&["apply", arg(&file), "--yes"]);
    assert!(
        out.contains("OK") && out.contains("VERIFICATION PATTERN OF THE NEW MASTER KEY"),
        "{out}"
    );
    let v = json(&file);
    let vp = v["rounds"][1]["commands"][0]["answer"]
        .as_str()
        .unwrap()
        .to_owned();
    let after = w_new_registers(&operator);
    assert_eq!(after, vec![("full_uncommitted".to_owned(), vp.clone()); 2]);
    // Current registers unchanged.
    assert_eq!(
        registers(&operator)
            .iter()
            .map(|r| r.1.clone())
            .collect::<Vec<_>>(),
        before.iter().map(|r| r.1.clone()).collect::<Vec<_>>()
    );
}

/// Every selected unit's (new register state, new register VP).
fn w_new_registers(w: &Workstation) -> Vec<(String, String)> {
    w.compare_json()
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["new_mk"]["state"].as_str().unwrap().to_owned(),
                u["new_mk"]["vp"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_desired_state_with_a_master_key_plans_the_key_rounds_when_the_units_hold_none() {
    let alice = admin("alice", "alice-password-1");
    let bob = admin("bob", "bob-password-22");
    let carol = admin("carol", "carol-password-333");
    // An initialized instance whose current registers were all cleared.
    let operator = initialized(&alice, &bob, |w, s| {
        w.ok(&["--secrets", s, "cryptounit-mk-clrcur", "--yes"]);
    });
    assert!(registers(&operator).iter().all(|r| r.0 == "empty"));
    let dir = operator.path().join("desired");
    let certs: Vec<String> = [&alice.0, &bob.0, &carol.0]
        .iter()
        .map(|w| {
            let c = certificate(w, &dir);
            format!("{:?}", c.file_name().unwrap().to_str().unwrap())
        })
        .collect();
    let desired = dir.join("instance.toml");
    fs::write(
        &desired,
        format!(
            "admins = [{}]\nsig_threshold = 2\nrev_threshold = 2\nmaster_key_present = true\n",
            certs.join(", ")
        ),
    )
    .unwrap();
    let file = operator.path().join("desired.json");
    let plan = ["plan", "--desired", arg(&desired), "--out", arg(&file)];
    let out = operator.ok(&plan);
    assert!(
        out.contains("+ admin carol") && out.contains("+ master key"),
        "{out}"
    );
    assert_eq!(json(&file)["kind"], "desired-key");

    for round in 1..=3 {
        // Each round's copies travel separately and merge.
        let (a, b) = (mail(&file, &alice.0), mail(&file, &bob.0));
        for (w, name, copy) in [(&alice, "alice", &a), (&bob, "bob", &b)] {
            w.0.ok(&[
                "--secrets",
                &w.1,
                "approve",
                arg(copy),
                "--admin",
                name,
                "--yes",
            ]);
        }
        let (a_back, b_back) = (
            operator.path().join("a.json"),
            operator.path().join("b.json"),
        );
        fs::copy(&a, &a_back).unwrap();
        fs::copy(&b, &b_back).unwrap();
        fs::remove_file(&file).unwrap();
        operator.ok(&["approve", "--merge", arg(&file), arg(&a_back), arg(&b_back)]);
        fs::remove_file(&a_back).unwrap();
        fs::remove_file(&b_back).unwrap();
        let o = operator.run(&["apply", arg(&file), "--yes"]);
        let expected = if round < 3 { 4 } else { 0 };
        assert_eq!(o.status.code(), Some(expected), "round {round}: {o:?}");
    }
    let vp = generated_vp(&json(&file));
    for r in registers(&operator) {
        assert_eq!(
            (r.0.as_str(), r.1.as_str(), r.2.as_str()),
            ("valid", vp.as_str(), "empty")
        );
    }
    let admins = operator.ok(&["cryptounit-admins", "--output", "json"]);
    assert!(admins.contains("carol"), "{admins}");
    let thresholds: Value =
        serde_json::from_str(&operator.ok(&["cryptounit-thrhlds", "--output", "json"])).unwrap();
    for u in thresholds.as_array().unwrap() {
        assert_eq!(
            (&u["sig_threshold"], &u["rev_threshold"]),
            (&Value::from(2), &Value::from(2))
        );
    }

    // In the desired state now: nothing to plan.
    fs::remove_file(&file).unwrap();
    let out = operator.ok(&plan);
    assert!(out.contains("no ceremony file was written"), "{out}");
    assert!(!file.exists());
}

#[test]
fn a_desired_master_key_is_refused_when_only_some_units_hold_one() {
    let alice = admin("alice", "alice-password-1");
    let bob = admin("bob", "bob-password-22");
    // Unit 1's current register cleared; the others keep the key.
    let operator = initialized(&alice, &bob, |w, s| {
        w.ok(&["cryptounit-rm", "2", "3", "4"]);
        w.ok(&["--secrets", s, "cryptounit-mk-clrcur", "--yes"]);
        w.ok(&["cryptounit-add", "2", "3", "4"]);
    });
    let dir = operator.path().join("desired");
    let desired = dir.join("instance.toml");
    let certs: Vec<String> = [&alice.0, &bob.0]
        .iter()
        .map(|w| {
            let c = certificate(w, &dir);
            format!("{:?}", c.file_name().unwrap().to_str().unwrap())
        })
        .collect();
    fs::write(
        &desired,
        format!(
            "admins = [{}]\nsig_threshold = 2\nrev_threshold = 1\nmaster_key_present = true\n",
            certs.join(", ")
        ),
    )
    .unwrap();
    let file = operator.path().join("desired.json");
    // auto-init is planned only for units in imprint mode, or to continue one left
    // part-way with the administrators and thresholds the units hold (alice alone is
    // not); without a terminal a missing threshold is an error naming its flag.
    let cert = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with("alice-") && name.ends_with(".crt.pem")
        })
        .unwrap();
    let init = |extra: &[&str]| {
        let mut args = vec![
            "plan",
            "auto-init",
            "--instance",
            "1",
            "--admin-cert",
            arg(&cert),
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--out", arg(&file)]);
        let stderr = operator.fails(&args, 1);
        snap::redact_paths(&stderr, &[(operator.path(), "[WS]")])
    };
    snap::assert_snapshot(
        "approvals_rounds_plan_auto_init_not_imprint",
        &init(&["--sig-threshold", "1", "--rev-threshold", "1"]),
    );
    snap::assert_snapshot(
        "approvals_rounds_plan_auto_init_needs_threshold",
        &init(&["--rev-threshold", "1"]),
    );
    assert!(!file.exists());
    let stderr = operator.fails(
        &["plan", "--desired", arg(&desired), "--out", arg(&file)],
        1,
    );
    snap::assert_snapshot(
        "approvals_rounds_desired_key_mixed",
        &snap::redact_paths(&stderr, &[(operator.path(), "[WS]")]),
    );
    assert!(!file.exists());
}
