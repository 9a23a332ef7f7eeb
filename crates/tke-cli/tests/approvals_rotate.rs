//! Rotation and recovery as multi-round ceremony files through the real binary: `tke plan
//! auto-mk-rotate` and `tke plan auto-recover`, approved round by round by alice and bob
//! on their own workstation directories, applied from the operator's (which holds no
//! key); the keys in key storage unwrap afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod approvals_setup;
mod common;

use std::{fs, path::Path};

use approvals_setup::{
    apply, arg, current_vps, failure, library, load_new, plan, setup, states, stored_key,
    stored_vps, summaries, unwraps, Setup,
};
use common::snap;
use serde_json::Value;
use tke_client::kms::ClientUnits;
use tke_keystore::{KeyId, KeyStore as _, SqliteKeyStore};
use tke_kms::{InstanceUnits as _, WrappedDataKey};

/// `tke apply` when the round after the one it applied needs approvals: exit code 4,
/// saying which round was applied.
fn apply_round(s: &Setup, file: &Path, applied: usize, rounds: usize) {
    let err = s.operator.fails(&["apply", arg(file), "--yes"], 4);
    assert!(
        err.contains(&format!("round {applied} of {rounds} applied")),
        "{err}"
    );
}

/// The export's recorded answer (the envelopes) with one hex digit changed: refused by
/// `approve` and by `apply`, offline, before anything is signed or sent.
fn edited_envelopes_are_refused(s: &Setup, file: &Path) {
    let mut v: Value = serde_json::from_str(&fs::read_to_string(file).unwrap()).unwrap();
    let answer = &mut v["rounds"][1]["commands"][0]["answer"];
    let hex = answer.as_str().unwrap().to_owned();
    let flipped = if hex.ends_with('0') { '1' } else { '0' };
    *answer = Value::from(format!("{}{flipped}", &hex[..hex.len() - 1]));
    let edited = s.alice.w.path().join("edited.json");
    fs::write(&edited, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    let before = fs::read(&edited).unwrap();
    let args = [
        "--secrets",
        &s.alice.secrets,
        "approve",
        arg(&edited),
        "--admin",
        "alice",
        "--yes",
    ];
    let refused = failure(s, &s.alice.w, &args, 1);
    snap::assert_snapshot("approvals_rotate_edited_envelopes", &refused);
    assert_eq!(fs::read(&edited).unwrap(), before);
    let states_before = states(&s.operator);
    let refused = failure(s, &s.operator, &["apply", arg(&edited), "--yes"], 1);
    assert!(refused.contains("round 2, crypto unit 3"), "{refused}");
    assert_eq!(states(&s.operator), states_before, "nothing was sent");
}

#[test]
fn a_rotation_is_approved_round_by_round_and_the_stored_keys_unwrap_afterwards() {
    let s = setup();
    let w = &s.operator;
    let key = stored_key(w);
    let old = current_vps(w)[0].as_str().unwrap().to_owned();
    assert_eq!(stored_vps(w), vec![old.clone(); 3]);

    let file = plan(w, "auto-mk-rotate", &["--instance", "1"]);
    let v: Value = serde_json::from_str(&fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(v["kind"], "auto-mk-rotate");
    assert_eq!(v["ceremony"], "Rotating the master key");
    let first = summaries(&file);
    assert_eq!(
        first,
        vec![
            (1, "generate a single-use importer key".to_owned()),
            (2, "generate a single-use importer key".to_owned()),
            (3, "generate a random master key".to_owned()),
            (4, "generate a single-use importer key".to_owned()),
        ]
    );

    // Rounds 1 to 3: the key generated, exported, imported and committed everywhere.
    for round in 1..=3 {
        s.approve_round(&file);
        apply_round(&s, &file, round, 4);
        if round == 2 {
            edited_envelopes_are_refused(&s, &file);
        }
    }
    let new = states(w);
    assert!(new
        .iter()
        .all(|(n, c, _)| n == "full_committed" && c == "valid"));
    // Key storage is untouched until round 4 is sent.
    assert_eq!(stored_vps(w), vec![old.clone(); 3]);
    unwraps(w, &key);
    let round4 = summaries(&file);
    assert_eq!(round4.len(), 4);
    assert!(round4
        .iter()
        .all(|(_, t)| t.starts_with("make the new master key current")));

    // Round 4: apply re-encrypts key storage, then sets the key immediately everywhere.
    s.approve_round(&file);
    apply(&s, &file, &[]);
    let current = current_vps(w);
    let to = current[0].as_str().unwrap().to_owned();
    assert_ne!(to, old);
    assert_eq!(current, vec![Value::from(to.as_str()); 4]);
    assert!(states(w).iter().all(|(n, _, _)| n == "empty"));
    assert_eq!(stored_vps(w), vec![to; 3]);
    unwraps(w, &key);
    let again = apply(&s, &file, &[]);
    assert!(again.contains("nothing was sent"), "{again}");
}

#[test]
fn a_recovery_is_approved_round_by_round_and_the_recovered_unit_unwraps_alone() {
    let s = setup();
    let w = &s.operator;
    let (root, data, wrapped) = stored_key(w);
    let instance = library(w).instances()[0].to_string();

    // Unit 2's current register cleared (its keys forced away), through a file too.
    w.ok(&["cryptounit-rm", "1", "3", "4"]);
    let clrcur = plan(w, "cryptounit-mk-clrcur", &["--force-with-keys", &instance]);
    apply(
        &s,
        &s.alice.approve(&clrcur),
        &["--force-with-keys", &instance],
    );
    w.ok(&["cryptounit-add", "1", "3", "4"]);
    assert_eq!(states(w)[1].1, "empty");

    // Three rounds: unit 2's importer key, unit 3's export, unit 2's import, commit and
    // set immediate.
    let file = plan(w, "auto-recover", &["--instance", "1"]);
    assert_eq!(
        summaries(&file),
        vec![(2, "generate a single-use importer key".to_owned())]
    );
    for round in 1..=2 {
        s.approve_round(&file);
        apply_round(&s, &file, round, 3);
    }
    let third: Vec<u64> = summaries(&file).iter().map(|(n, _)| *n).collect();
    assert_eq!(third, vec![2, 2, 2]);
    s.approve_round(&file);
    apply(&s, &file, &[]);
    let current = current_vps(w);
    assert_eq!(current, vec![current[0].clone(); 4], "one key everywhere");

    // Unit 2 alone unwraps the stored data key.
    let (client, instance) = {
        let c = library(w);
        let i = c.instances()[0].clone();
        (c, i)
    };
    let calls = ClientUnits::new(client, instance.clone());
    let two = calls
        .units()
        .unwrap()
        .into_iter()
        .find(|u| u.label.starts_with("2 ("))
        .unwrap();
    let store = SqliteKeyStore::open(&tke_client::kms::store_path(
        &w.path().join("local").join("keys"),
        &instance,
    ))
    .unwrap();
    let record = store.get(&KeyId::parse(&root).unwrap()).unwrap();
    let file = WrappedDataKey::parse(&wrapped).unwrap();
    let plain = calls
        .unwrap_data(&two, &record.vp, &record.wrapped, &file.wrapped)
        .unwrap();
    assert_eq!(&*plain, data.as_slice());
}

#[test]
fn a_rotation_to_a_loaded_key_is_one_approved_round_after_the_key_storage() {
    let s = setup();
    let w = &s.operator;
    let key = stored_key(w);
    let old = current_vps(w)[0].as_str().unwrap().to_owned();

    // A new key in every new register, not committed yet: refused, no file.
    load_new(&s, &[1, 2, 4]);
    let out = w.path().join("rotate.json");
    let args = ["plan", "cryptounit-mk-rotate", "--out", arg(&out)];
    snap::assert_snapshot(
        "approvals_rotate_loaded_not_committed",
        &failure(&s, w, &args, 1),
    );
    assert!(!out.exists());

    // Committed (a file too), then rotated: one round of set immediate, one approval each.
    let commit = plan(w, "cryptounit-mk-commit", &[]);
    s.approve_round(&commit);
    apply(&s, &commit, &[]);
    let file = plan(w, "cryptounit-mk-rotate", &[]);
    let v: Value = serde_json::from_str(&fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(v["kind"], "cryptounit-mk-rotate");
    let round = summaries(&file);
    assert_eq!(round.len(), 4);
    assert!(round
        .iter()
        .all(|(_, t)| t.starts_with("make the new master key current")));
    assert_eq!(stored_vps(w), vec![old.clone(); 3]);
    apply(&s, &s.alice.approve(&file), &[]);
    let current = current_vps(w);
    let to = current[0].as_str().unwrap().to_owned();
    assert_ne!(to, old);
    assert_eq!(current, vec![Value::from(to.as_str()); 4]);
    assert_eq!(stored_vps(w), vec![to; 3]);
    unwraps(w, &key);
}
