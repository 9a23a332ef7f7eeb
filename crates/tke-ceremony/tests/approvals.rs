//! Ceremony files without units: the JSON form round-trips, golden bytes, strict
//! decoding (each refusal asserted by its kind), approvals and merges.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use tke_ceremony::approvals::{describe, merge, CeremonyFile, FileError, Round, UnitCommand};
use tke_proto::{der::Encode, Command, Threshold, UnitId};
use tke_sigkey::Signer;
use tke_test_support::admin::MemSigner;

/// Unit id 01…01 at counter 8: set both thresholds to 2.
fn thresholds_file() -> CeremonyFile {
    let unit = UnitId([1; 16]);
    let command = Command::SetThresholds {
        signature: Threshold::new(2).unwrap(),
        revocation: Threshold::new(2).unwrap(),
    };
    let admin_command = command.to_wire(unit, 8).unwrap();
    CeremonyFile {
        ceremony: None,
        rounds: vec![Round::planned(vec![UnitCommand {
            num: 1,
            bytes: admin_command.to_der().unwrap(),
            admin_command,
            command,
            approvals: Vec::new(),
            answer: None,
        }])],
        force_with_keys: Vec::new(),
    }
}

/// The JSON of `file` with `edit` applied to its first command.
fn edited(file: &CeremonyFile, edit: impl Fn(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(&file.to_json()).unwrap();
    edit(&mut v["rounds"][0]["commands"][0]);
    v.to_string()
}

#[test]
fn the_json_form_round_trips_with_golden_command_bytes() {
    let mut file = thresholds_file();
    let json = file.to_json();
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["format"], "tke-ceremony");
    assert_eq!(v["version"], 2);
    assert_eq!(v["rounds"][0]["state"], "planned");
    assert!(v.get("kind").is_none(), "a single-round file has no kind");
    let c = &v["rounds"][0]["commands"][0];
    assert_eq!(c["unit"], "01010101-0101-0101-0101-010101010101");
    assert_eq!(c["counter"], 8);
    // AdminCommand { unitId 01×16, counter 8, setThresholds(8), input SEQUENCE { 2, 2 } }.
    assert_eq!(
        c["command"],
        "30220410010101010101010101010101010101010201080a010804083006020102020102"
    );
    assert_eq!(
        c["summary"],
        "set the signature threshold to 2 and the revocation signature threshold to 2"
    );
    assert_eq!(CeremonyFile::from_json(&json).unwrap(), file);

    let alice = MemSigner::new("alice");
    assert_eq!(file.approve(&alice).unwrap(), 1);
    assert_eq!(
        file.approve(&alice).unwrap(),
        0,
        "approving twice adds nothing"
    );
    let back = CeremonyFile::from_json(&file.to_json()).unwrap();
    assert_eq!(back, file);
    assert_eq!(
        back.rounds[0].commands[0].approvals[0]
            .admin()
            .name
            .as_str(),
        "alice"
    );
    // The approval's Debug names the administrator, not the signature.
    let debug = format!("{:?}", back.rounds[0].commands[0].approvals[0]);
    assert!(debug.starts_with("Approval(alice "), "{debug}");
}

#[test]
fn every_summary_comes_from_the_bytes() {
    let alice = MemSigner::new("alice");
    let add = Command::AddAdmin(alice.certificate().clone());
    assert_eq!(
        describe(&add),
        format!("install administrator alice (SKI {})", alice.ski().to_hex())
    );
    assert_eq!(
        describe(&Command::RemoveAdmin(alice.ski())),
        format!(
            "remove the administrator whose SKI is {}",
            alice.ski().to_hex()
        )
    );
}

#[test]
fn strict_decoding_refuses_every_edit() {
    let mut file = thresholds_file();
    file.approve(&MemSigner::new("alice")).unwrap();
    let refused = |text: &str| CeremonyFile::from_json(text).unwrap_err();

    let unknown = edited(&file, |c| c["comment"] = Value::from("hello"));
    assert!(matches!(refused(&unknown), FileError::Json { .. }));

    // Version 1 (no round state) is still read; its fields of version 2 are not.
    let mut v: Value = serde_json::from_str(&file.to_json()).unwrap();
    v["version"] = Value::from(1);
    v["rounds"][0].as_object_mut().unwrap().remove("state");
    assert_eq!(CeremonyFile::from_json(&v.to_string()).unwrap(), file);
    v["rounds"][0]["state"] = Value::from("planned");
    assert!(matches!(refused(&v.to_string()), FileError::Layout { .. }));
    let mut v: Value = serde_json::from_str(&file.to_json()).unwrap();
    v["rounds"][0].as_object_mut().unwrap().remove("state");
    assert!(matches!(refused(&v.to_string()), FileError::Layout { .. }));
    // An answer in a round not applied, and an unknown ceremony kind.
    let answered = edited(&file, |c| c["answer"] = Value::from("00"));
    assert!(matches!(refused(&answered), FileError::Layout { .. }));
    let mut v: Value = serde_json::from_str(&file.to_json()).unwrap();
    v["kind"] = Value::from("tea-ceremony");
    v["params"] = Value::from(1);
    assert!(matches!(
        refused(&v.to_string()),
        FileError::UnknownKind { .. }
    ));

    let mut v: Value = serde_json::from_str(&file.to_json()).unwrap();
    v["version"] = Value::from(3);
    assert!(matches!(
        refused(&v.to_string()),
        FileError::Version { version: 3, .. }
    ));

    // A trailing byte after the AdminCommand.
    let trailing = edited(&file, |c| {
        c["command"] = Value::from(format!("{}00", c["command"].as_str().unwrap()));
    });
    assert!(matches!(
        refused(&trailing),
        FileError::Command { num: 1, .. }
    ));

    // The same value with a long-form length: not DER.
    let long_form = edited(&file, |c| {
        let hex = c["command"].as_str().unwrap().to_owned();
        c["command"] = Value::from(format!("308122{}", &hex[4..]));
    });
    assert!(matches!(refused(&long_form), FileError::Command { .. }));

    let unit = edited(&file, |c| {
        c["unit"] = Value::from("02020202-0202-0202-0202-020202020202")
    });
    assert!(matches!(
        refused(&unit),
        FileError::Mismatch { field: "unit", .. }
    ));

    let counter = edited(&file, |c| c["counter"] = Value::from(9));
    assert!(matches!(
        refused(&counter),
        FileError::Mismatch {
            field: "counter",
            ..
        }
    ));

    let summary = edited(&file, |c| c["summary"] = Value::from("nothing to see"));
    assert!(matches!(
        refused(&summary),
        FileError::Mismatch {
            field: "summary",
            ..
        }
    ));

    // Another value, re-described: only the signature shows the edit.
    let resigned = edited(&file, |c| {
        let hex = c["command"].as_str().unwrap().to_owned();
        c["command"] = Value::from(format!("{}3", &hex[..hex.len() - 1]));
        c["summary"] = Value::from(
            "set the signature threshold to 2 and the revocation signature threshold to 3",
        );
    });
    assert!(matches!(
        refused(&resigned),
        FileError::BadSignature { num: 1, .. }
    ));

    let renamed = edited(&file, |c| c["approvals"][0]["admin"] = Value::from("bob"));
    assert!(matches!(
        refused(&renamed),
        FileError::Mismatch { field: "admin", .. }
    ));

    let twice = edited(&file, |c| {
        let a = c["approvals"][0].clone();
        c["approvals"].as_array_mut().unwrap().push(a);
    });
    assert!(matches!(
        refused(&twice),
        FileError::DuplicateApproval { .. }
    ));

    let mut v: Value = serde_json::from_str(&file.to_json()).unwrap();
    v["ceremony"] = Value::from("Harmless test");
    assert!(matches!(refused(&v.to_string()), FileError::Title { .. }));

    let empty = edited(&file, |_| {});
    let mut v: Value = serde_json::from_str(&empty).unwrap();
    v["rounds"] = Value::Array(Vec::new());
    assert!(matches!(refused(&v.to_string()), FileError::Empty));
}

#[test]
fn approvals_of_copies_merge_and_other_plans_do_not() {
    let plan = thresholds_file();
    let (alice, bob) = (MemSigner::new("alice"), MemSigner::new("bob"));
    let mut a = plan.clone();
    a.approve(&alice).unwrap();
    let mut b = plan.clone();
    b.approve(&bob).unwrap();
    b.approve(&alice).unwrap();
    let merged = merge(vec![a, b]).unwrap();
    let names: Vec<String> = merged.rounds[0].commands[0]
        .approvals
        .iter()
        .map(|a| a.admin().name.to_string())
        .collect();
    assert_eq!(names, ["alice", "bob"], "each administrator once");

    let mut other = plan.clone();
    other.rounds[0].commands[0].admin_command.counter = 9;
    other.rounds[0].commands[0].bytes = other.rounds[0].commands[0].admin_command.to_der().unwrap();
    assert!(matches!(
        merge(vec![plan, other]),
        Err(FileError::MergeMismatch { index: 2 })
    ));
}
