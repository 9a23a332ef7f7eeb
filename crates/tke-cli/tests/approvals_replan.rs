//! An interrupted `tke apply` loses nothing: the units ran a round but the file was not
//! rewritten with their answers (`TKE_CRASH_AT` kills `tke apply` there). The stale file
//! is refused; planning again continues the ceremony from where the units stand, and two
//! administrators approving each round finish it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod approvals_setup;
mod common;

use std::{fs, path::Path};

use approvals_setup::{
    apply, arg, current_vps, failure, plan, setup, states, stored_key, stored_vps, summaries,
    unwraps, Admin, Setup,
};
use common::snap;
use serde_json::Value;

/// `tke apply FILE --yes` with `TKE_CRASH_AT=point`: killed there.
fn apply_killed_at(s: &Setup, file: &Path, point: &str) {
    s.operator.crash(point, &["apply", arg(file), "--yes"]);
}

/// The `step` of each unit in the file's parameters.
fn steps(file: &Path) -> Vec<String> {
    ceremony(file)["params"]["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["step"].as_str().unwrap().to_owned())
        .collect()
}

/// Approves and applies every round of `file` (exit 4 after each but the last);
/// returns how many there were.
fn finish(s: &Setup, file: &Path) -> usize {
    for round in 1.. {
        s.approve_round(file);
        let o = s
            .operator
            .tke()
            .args(["apply", arg(file), "--yes"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        match o.status.code() {
            Some(0) => return round,
            Some(4) => assert!(stderr.contains(&format!("round {round} of ")), "{stderr}"),
            _ => panic!("apply failed: {:?}\n{stderr}", o.status),
        }
    }
    unreachable!()
}

/// `file` with `edit` applied to its JSON, approved by alice: refused (stderr as
/// snapshot `name`), the file unchanged.
fn edited_refused(s: &Setup, file: &Path, name: &str, edit: impl FnOnce(&mut Value)) {
    let mut v = ceremony(file);
    edit(&mut v);
    let edited = s.alice.w.path().join("edited.json");
    fs::write(&edited, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    let before = fs::read(&edited).unwrap();
    let args = ["--secrets", &s.alice.secrets, "approve", arg(&edited)];
    let args = [&args[..], &["--admin", "alice", "--yes"]].concat();
    snap::assert_snapshot(name, &failure(s, &s.alice.w, &args, 1));
    assert_eq!(fs::read(&edited).unwrap(), before);
}

fn ceremony(file: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(file).unwrap()).unwrap()
}

#[test]
fn a_rotation_killed_after_round_2_and_after_the_reencryption_is_planned_again_and_finished() {
    let s = setup();
    let key = stored_key(&s.operator);
    let old = current_vps(&s.operator)[0].as_str().unwrap().to_owned();

    // Round 1 applied; round 2 (the export) sent, the process killed before the file
    // got the envelopes.
    let file = plan(&s.operator, "auto-mk-rotate", &["--instance", "1"]);
    s.approve_round(&file);
    s.operator.fails(&["apply", arg(&file), "--yes"], 4);
    s.approve_round(&file);
    apply_killed_at(&s, &file, "apply:round-2-sent");

    // The file is stale (the source's counter moved): refused, nothing sent.
    let before = s.operator.snapshot();
    let args = ["apply", arg(&file), "--yes"];
    snap::assert_snapshot(
        "approvals_replan_stale_after_crash",
        &failure(&s, &s.operator, &args, 1),
    );
    assert_eq!(before, s.operator.snapshot());

    // Planned again: the new key stays in recovery unit 3, the others make new importer
    // keys, and the file says what it continues.
    fs::remove_file(&file).unwrap();
    let file = plan(&s.operator, "auto-mk-rotate", &["--instance", "1"]);
    let v = ceremony(&file);
    let title = v["ceremony"].as_str().unwrap();
    assert!(
        title.starts_with("Rotating the master key (continues the auto-mk-rotate that stopped: the new master key was generated in recovery crypto unit 3"),
        "{title}"
    );
    let to = v["params"]["to"].as_str().unwrap().to_owned();
    assert_ne!(to, old);
    // The key continued with cannot be edited into the old one.
    edited_refused(&s, &file, "approvals_replan_rotate_to_is_old", |v| {
        v["params"]["to"] = v["params"]["vp"].clone();
    });
    assert_eq!(
        summaries(&file),
        vec![
            (1, "generate a single-use importer key".to_owned()),
            (2, "generate a single-use importer key".to_owned()),
            (4, "generate a single-use importer key".to_owned()),
        ]
    );

    // Rounds 1 to 3 of the new file; round 4 killed once key storage is re-encrypted.
    for round in 1..=3 {
        s.approve_round(&file);
        let err = s.operator.fails(&["apply", arg(&file), "--yes"], 4);
        assert!(
            err.contains(&format!("round {round} of 4 applied")),
            "{err}"
        );
    }
    assert!(states(&s.operator)
        .iter()
        .all(|(n, c, _)| n == "full_committed" && c == "valid"));
    s.approve_round(&file);
    apply_killed_at(&s, &file, "apply:after-reencrypt");
    assert_eq!(stored_vps(&s.operator), vec![to.clone(); 3]);
    assert_eq!(current_vps(&s.operator), vec![Value::from(old.as_str()); 4]);

    // Planned again: set immediate only (the re-encryption is done and not redone).
    fs::remove_file(&file).unwrap();
    let file = plan(&s.operator, "auto-mk-rotate", &["--instance", "1"]);
    let v = ceremony(&file);
    assert_eq!(v["params"]["to"], Value::from(to.as_str()));
    assert!(
        v["ceremony"]
            .as_str()
            .unwrap()
            .contains("key storage is re-encrypted (3 keys)"),
        "{}",
        v["ceremony"]
    );
    let round = summaries(&file);
    assert_eq!(round.len(), 4);
    assert!(round
        .iter()
        .all(|(_, t)| t.starts_with("make the new master key current")));
    assert_eq!(finish(&s, &file), 1);

    assert_eq!(current_vps(&s.operator), vec![Value::from(to.as_str()); 4]);
    assert!(states(&s.operator)
        .iter()
        .all(|(n, c, imprint)| n == "empty" && c == "valid" && !imprint));
    assert_eq!(stored_vps(&s.operator), vec![to; 3]);
    unwraps(&s.operator, &key);
}

/// The operator's fresh workstation (units 1, 2 operational, 3, 4 recovery, in imprint
/// mode) holding alice's and bob's certificates only, in a directory of their own.
fn fresh() -> (Setup, Vec<String>) {
    let s = approvals_setup::imprint();
    let certs = certificates(&s);
    (s, certs)
}

/// alice's and bob's certificate files (as mailed to the operator), in the operator's
/// directory `certs`.
fn certificates(s: &Setup) -> Vec<String> {
    let certs = s.operator.path().join("certs");
    fs::create_dir_all(&certs).unwrap();
    let certificate = |a: &Admin| {
        let from = fs::read_dir(a.w.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_str().unwrap().ends_with(".crt.pem"))
            .unwrap();
        let to = certs.join(from.file_name().unwrap());
        fs::copy(&from, &to).unwrap();
        to.to_str().unwrap().to_owned()
    };
    vec![certificate(&s.alice), certificate(&s.bob)]
}

/// `tke plan auto-init` of instance 1 with thresholds `sig`/2 for alice and bob.
fn auto_init_args<'a>(certs: &'a [String], sig: &'a str, out: &'a Path) -> Vec<&'a str> {
    let mut args = vec!["plan", "auto-init", "--instance", "1"];
    args.extend(["--sig-threshold", sig, "--rev-threshold", "2"]);
    for c in certs {
        args.extend(["--admin-cert", c.as_str()]);
    }
    args.extend(["--out", arg(out)]);
    args
}

fn plan_auto_init(s: &Setup, certs: &[String]) -> std::path::PathBuf {
    let out = s.operator.path().join("init.json");
    let _ = fs::remove_file(&out);
    s.operator.ok(&auto_init_args(certs, "2", &out));
    out
}

#[test]
fn an_auto_init_killed_after_round_1_and_after_round_2_is_planned_again_and_finished() {
    let (s, certs) = fresh();
    let file = plan_auto_init(&s, &certs);
    s.approve_round(&file);
    apply_killed_at(&s, &file, "apply:round-1-sent");
    // Every unit left imprint mode; the recovery unit holds the key; the file lost it.
    assert!(states(&s.operator).iter().all(|(_, _, imprint)| !imprint));

    // Other thresholds than the units hold: refused, nothing written.
    let other = s.operator.path().join("other.json");
    let args = auto_init_args(&certs, "1", &other);
    snap::assert_snapshot(
        "approvals_replan_auto_init_other_thresholds",
        &failure(&s, &s.operator, &args, 1),
    );
    assert!(!other.exists());

    // Planned again: the importer keys, the export, the import: the key stays.
    let file = plan_auto_init(&s, &certs);
    let v = ceremony(&file);
    let title = v["ceremony"].as_str().unwrap();
    assert!(
        title.starts_with("Initializing a service instance (continues the auto-init that stopped part-way: the master key "),
        "{title}"
    );
    assert!(
        title.contains("to transfer the key to: crypto unit(s) 1, 2, 4"),
        "{title}"
    );
    let vp = v["params"]["vp"].as_str().unwrap().to_owned();
    // Without the key held already, the recovery unit would have to generate one.
    edited_refused(&s, &file, "approvals_replan_auto_init_no_vp", |v| {
        v["params"].as_object_mut().unwrap().remove("vp").unwrap();
    });
    let importers = vec![
        (1, "generate a single-use importer key".to_owned()),
        (2, "generate a single-use importer key".to_owned()),
        (4, "generate a single-use importer key".to_owned()),
    ];
    assert_eq!(summaries(&file), importers);

    // Round 1 applied, round 2 (the export) sent and the process killed: planned again,
    // the same three rounds.
    s.approve_round(&file);
    s.operator.fails(&["apply", arg(&file), "--yes"], 4);
    s.approve_round(&file);
    apply_killed_at(&s, &file, "apply:round-2-sent");
    let file = plan_auto_init(&s, &certs);
    assert_eq!(ceremony(&file)["params"]["vp"], Value::from(vp.as_str()));
    assert_eq!(summaries(&file), importers);
    assert_eq!(finish(&s, &file), 3);

    assert_eq!(current_vps(&s.operator), vec![Value::from(vp.as_str()); 4]);
    assert!(states(&s.operator)
        .iter()
        .all(|(n, c, imprint)| n == "empty" && c == "valid" && !imprint));
    // Initialized: planning again is refused as for any initialized instance.
    let again = s.operator.path().join("again.json");
    let refused = failure(&s, &s.operator, &auto_init_args(&certs, "2", &again), 1);
    assert!(refused.contains("is not in imprint mode"), "{refused}");
}

#[test]
fn a_recovery_and_a_key_part_load_killed_after_a_round_are_planned_again_and_finished() {
    let s = setup();
    let w = &s.operator;
    let old = current_vps(&s.operator)[0].clone();

    // Unit 2's current register cleared through a file (no key is stored).
    w.ok(&["cryptounit-rm", "1", "3", "4"]);
    let clrcur = plan(w, "cryptounit-mk-clrcur", &[]);
    apply(&s, &s.alice.approve(&clrcur), &[]);
    w.ok(&["cryptounit-add", "1", "3", "4"]);

    // Killed once unit 2 (the only unit of round 1) made its importer key, then after
    // round 2 (the export) of the file planned again: each time the plan starts over
    // with a new importer key.
    let importer = vec![(2, "generate a single-use importer key".to_owned())];
    let file = plan(w, "auto-recover", &["--instance", "1"]);
    s.approve_round(&file);
    apply_killed_at(&s, &file, "apply:round-1-unit-2-sent");
    fs::remove_file(&file).unwrap();
    let file = plan(w, "auto-recover", &["--instance", "1"]);
    assert_eq!(summaries(&file), importer);
    s.approve_round(&file);
    w.fails(&["apply", arg(&file), "--yes"], 4);
    s.approve_round(&file);
    apply_killed_at(&s, &file, "apply:round-2-sent");
    fs::remove_file(&file).unwrap();
    let file = plan(w, "auto-recover", &["--instance", "1"]);
    assert_eq!(summaries(&file), importer);
    assert_eq!(finish(&s, &file), 3);
    assert_eq!(current_vps(&s.operator), vec![old; 4]);

    // A key-part load into units 1 and 2 killed after round 1 (the importer keys):
    // planned again, it makes new importer keys and loads.
    let secrets = w.secrets(&[
        ("\"part a\"", "part-a-password-1"),
        ("\"part b\"", "part-b-password-22"),
    ]);
    let secrets = secrets.to_str().unwrap();
    for part in ["part a", "part b"] {
        w.ok(&[
            "--secrets",
            secrets,
            "mk-add",
            "--random",
            "--description",
            part,
        ]);
    }
    w.ok(&["cryptounit-rm", "3", "4"]);
    let parts = ["--part", "part a", "--part", "part b"];
    let file = plan(w, "cryptounit-mk-load", &parts);
    fs::copy(s.alice.approve(&file), &file).unwrap();
    apply_killed_at(&s, &file, "apply:round-1-sent");
    fs::remove_file(&file).unwrap();
    let file = plan(w, "cryptounit-mk-load", &parts);
    fs::copy(s.alice.approve(&file), &file).unwrap();
    w.fails(&["apply", arg(&file), "--yes"], 4);
    let seal = ["--secrets", secrets, "plan", "cryptounit-mk-load", "--seal"];
    w.ok(&[&seal[..], &[arg(&file)]].concat());
    fs::copy(s.alice.approve(&file), &file).unwrap();
    apply(&s, &file, &[]);
    let loaded = states(w);
    assert_eq!(loaded.len(), 2);
    assert!(
        loaded.iter().all(|(n, _, _)| n == "full_uncommitted"),
        "{loaded:?}"
    );
}

#[test]
fn a_rotation_a_direct_run_left_during_the_transfer_or_the_set_immediate_is_finished_by_a_file() {
    let s = setup();
    let key = stored_key(&s.operator);
    let args = ["--secrets", "", "auto-mk-rotate", "--yes"];
    s.with_keys(|secrets| {
        let args = [&["--secrets", secrets], &args[2..]].concat();
        s.operator.crash("auto-mk-rotate:during-transfer", &args);
    });
    // The source holds the key, units imported it (the imports run in parallel: some
    // or all), the others wait for it: their transfer first, then the commits.
    let file = plan(&s.operator, "auto-mk-rotate", &["--instance", "1"]);
    let found = steps(&file);
    let transfer = found.iter().any(|s| s == "transfer");
    let source = if transfer { "source" } else { "commit" };
    assert_eq!(found[2], source, "{found:?}");
    assert!(found.iter().any(|s| s == "commit"), "{found:?}");
    assert!(
        found
            .iter()
            .all(|s| ["source", "commit", "transfer"].contains(&s.as_str())),
        "{found:?}"
    );
    let to = ceremony(&file)["params"]["to"].as_str().unwrap().to_owned();
    assert_eq!(finish(&s, &file), if transfer { 4 } else { 2 });
    assert_eq!(current_vps(&s.operator), vec![Value::from(to.as_str()); 4]);
    assert_eq!(stored_vps(&s.operator), vec![to.clone(); 3]);

    // A second rotation stopped once one unit uses the new key.
    fs::remove_file(&file).unwrap();
    s.with_keys(|secrets| {
        let args = [&["--secrets", secrets], &args[2..]].concat();
        s.operator.crash("auto-mk-rotate:during-setimm", &args);
    });
    let file = plan(&s.operator, "auto-mk-rotate", &["--instance", "1"]);
    let title = ceremony(&file)["ceremony"].as_str().unwrap().to_owned();
    assert!(title.contains("already use the new master key"), "{title}");
    let found = steps(&file);
    assert_eq!(
        found.iter().filter(|s| *s == "done").count(),
        1,
        "{found:?}"
    );
    assert_eq!(summaries(&file).len(), 3);
    assert_eq!(finish(&s, &file), 1);
    let current = current_vps(&s.operator);
    assert_ne!(current[0], Value::from(to.as_str()));
    assert_eq!(current, vec![current[0].clone(); 4]);
    assert!(states(&s.operator).iter().all(|(n, _, _)| n == "empty"));
    assert_eq!(
        stored_vps(&s.operator),
        vec![current[0].as_str().unwrap().to_owned(); 3]
    );
    unwraps(&s.operator, &key);
}

#[test]
fn an_auto_init_a_direct_run_left_part_way_is_finished_by_a_file() {
    for point in [
        "auto-init:thresholds-on-a-unit",
        "auto-init:committed-on-a-unit",
    ] {
        let (s, certs) = fresh();
        s.with_keys(|secrets| {
            let args = common::auto_init_args(secrets, (2, 2), &["alice", "bob"]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            s.operator.crash(point, &args);
        });
        let in_imprint = states(&s.operator).iter().any(|(_, _, imprint)| *imprint);
        let file = plan_auto_init(&s, &certs);
        let v = ceremony(&file);
        let title = v["ceremony"].as_str().unwrap();
        assert!(
            title.contains("continues the auto-init"),
            "{point}: {title}"
        );
        if point.ends_with("committed-on-a-unit") {
            // Round 3 stopped after a unit committed: the rest of round 3 only, and
            // the transfer again to the units that had not imported.
            assert!(
                title.contains("to set immediate: crypto unit(s)"),
                "{title}"
            );
        } else {
            // Stopped while setting thresholds (the units in parallel: some or all):
            // round 1 sets up the units still in imprint mode.
            assert_eq!(
                title.contains("administrators or thresholds to set"),
                in_imprint,
                "{title}"
            );
        }
        let transfer = title.contains("to transfer the key to");
        let rounds = finish(&s, &file);
        assert_eq!(rounds, if transfer { 3 } else { 1 }, "{point}: {title}");
        let current = current_vps(&s.operator);
        assert!(current[0].is_string(), "{point}");
        assert_eq!(current, vec![current[0].clone(); 4], "{point}");
        assert!(
            states(&s.operator)
                .iter()
                .all(|(n, c, imprint)| n == "empty" && c == "valid" && !imprint),
            "{point}"
        );
    }
}

#[test]
fn a_desired_master_key_killed_after_round_1_is_finished_by_a_planned_recovery() {
    let s = setup();
    let w = &s.operator;
    s.with_keys(|secrets| {
        w.ok(&["--secrets", secrets, "cryptounit-mk-clrcur", "--yes"]);
    });
    let certs = certificates(&s);
    let names: Vec<String> = certs
        .iter()
        .map(|c| format!("{:?}", Path::new(c).file_name().unwrap().to_str().unwrap()))
        .collect();
    let desired = w.path().join("certs").join("instance.toml");
    let toml = format!(
        "admins = [{}]\nsig_threshold = 2\nrev_threshold = 1\nmaster_key_present = true\n",
        names.join(", ")
    );
    fs::write(&desired, toml).unwrap();
    let file = w.path().join("desired.json");
    let args = ["plan", "--desired", arg(&desired), "--out", arg(&file)];
    w.ok(&args);
    assert_eq!(ceremony(&file)["kind"], "desired-key");
    s.approve_round(&file);
    apply_killed_at(&s, &file, "apply:round-1-sent");

    // The recovery unit holds the key, the others do not: the desired state names the
    // way on, a recovery, which is planned as a file too.
    fs::remove_file(&file).unwrap();
    let refused = w.fails(&args, 1);
    assert!(
        refused.contains("copy it to them with `tke auto-recover`"),
        "{refused}"
    );
    let file = plan(w, "auto-recover", &["--instance", "1"]);
    assert_eq!(finish(&s, &file), 3);
    let current = current_vps(w);
    assert!(current[0].is_string());
    assert_eq!(current, vec![current[0].clone(); 4]);
    assert!(states(w)
        .iter()
        .all(|(n, c, _)| n == "empty" && c == "valid"));
    // In the desired state now: nothing to plan.
    let out = w.ok(&args);
    assert!(out.contains("no ceremony file was written"), "{out}");
}
