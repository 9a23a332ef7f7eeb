//! Ceremony files of the register commands and zeroize without units: titles, the
//! `force_with_keys` record (round trip, strict decoding, part of the plan for merges).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use tke_ceremony::approvals::{merge, CeremonyFile, FileError, ForcedKeys, Round, UnitCommand};
use tke_proto::{der::Encode, Command, UnitId, Vp};

/// Unit 01…01 at counter 8 running `command`.
fn file_of(command: Command) -> CeremonyFile {
    let admin_command = command.to_wire(UnitId([1; 16]), 8).unwrap();
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

fn forced() -> ForcedKeys {
    ForcedKeys {
        instance: "11111111-2222-3333-4444-555555555555".to_owned(),
        units: vec![1],
        keys: Some(3),
        under: vec![(Vp([7; 32]), 3)],
    }
}

#[test]
fn titles_name_the_register_command_or_zeroize() {
    for (command, title) in [
        (
            Command::CommitMk(Vp([7; 32])),
            "Committing the new master key register",
        ),
        (
            Command::SetImmediate(Vp([7; 32])),
            "Setting the new master key register immediately",
        ),
        (Command::ClearNew, "Clearing the new master key register"),
        (
            Command::ClearCurrent,
            "Clearing the current master key register",
        ),
        (Command::Zeroize, "Zeroizing crypto units"),
    ] {
        let file = file_of(command);
        assert_eq!(file.title(), title);
        assert_eq!(CeremonyFile::from_json(&file.to_json()).unwrap(), file);
    }
}

#[test]
fn the_force_record_round_trips_and_is_read_strictly() {
    let mut file = file_of(Command::Zeroize);
    file.force_with_keys = vec![forced()];
    let json = file.to_json();
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["force_with_keys"][0]["under"][0]["vp"],
        "07".repeat(32).as_str()
    );
    assert_eq!(CeremonyFile::from_json(&json).unwrap(), file);
    let shown = file.force_with_keys[0].to_string();
    assert!(
        shown.starts_with("planned with --force-with-keys 11111111-2222-3333-4444-555555555555: the key storage of service instance 11111111-2222-3333-4444-555555555555 held 3 key(s) wrapped under the master key of crypto unit(s) 1 (3 under 0707070707070707...)"),
        "{shown}"
    );

    // A file without the record writes no field.
    assert!(!file_of(Command::Zeroize)
        .to_json()
        .contains("force_with_keys"));

    let refused = |edit: &dyn Fn(&mut Value), on: &CeremonyFile| {
        let mut v: Value = serde_json::from_str(&on.to_json()).unwrap();
        edit(&mut v);
        CeremonyFile::from_json(&v.to_string()).unwrap_err()
    };
    // On a file that destroys no master key; twice; a VP that is not one; unknown field.
    let mut clear_new = file_of(Command::ClearNew);
    clear_new.force_with_keys = Vec::new();
    let add = |v: &mut Value| {
        v["force_with_keys"] = serde_json::json!([{
            "instance": "x", "units": [1], "keys": 1, "under": []
        }]);
    };
    assert!(matches!(
        refused(&add, &clear_new),
        FileError::Forced { reason, .. } if reason.contains("destroys no master key")
    ));
    let twice = |v: &mut Value| {
        let r = v["force_with_keys"][0].clone();
        v["force_with_keys"].as_array_mut().unwrap().push(r);
    };
    assert!(matches!(
        refused(&twice, &file),
        FileError::Forced { reason, .. } if reason.contains("twice")
    ));
    let bad_vp = |v: &mut Value| v["force_with_keys"][0]["under"][0]["vp"] = "07".into();
    assert!(matches!(
        refused(&bad_vp, &file),
        FileError::Forced { reason, .. } if reason.contains("verification pattern")
    ));
    let unknown = |v: &mut Value| v["force_with_keys"][0]["note"] = "ok".into();
    assert!(matches!(refused(&unknown, &file), FileError::Json { .. }));
}

#[test]
fn copies_with_another_force_record_are_another_plan() {
    let mut with = file_of(Command::Zeroize);
    with.force_with_keys = vec![forced()];
    let without = file_of(Command::Zeroize);
    assert!(matches!(
        merge(vec![with.clone(), without]),
        Err(FileError::MergeMismatch { index: 2 })
    ));
    assert_eq!(merge(vec![with.clone(), with.clone()]).unwrap(), with);
}
