//! The persistent selection file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{fs, os::unix::fs::PermissionsExt};

use common::files_dir;
use tke_proto::Ski;
use tke_workstation::{KeyFileError, Selection};

#[test]
fn a_missing_file_is_an_empty_selection() {
    let (_t, dir) = files_dir();
    assert_eq!(dir.load_selection().unwrap(), Selection::default());
    assert!(!dir.selection_path().exists());
}

#[test]
fn save_then_load_round_trips_0600() {
    let (_t, dir) = files_dir();
    let sel = Selection {
        units: vec![
            "4c3f1b6e-0d2a-4f57-9a38-2f1e7c6d5b4a".into(),
            "a1b2c3d4-0000-4000-8000-000000000001".into(),
        ],
        sigkeys: vec![Ski([7; 32]), Ski([1; 32])],
    };
    dir.save_selection(&sel).unwrap();
    assert_eq!(dir.load_selection().unwrap(), sel);
    let p = dir.selection_path();
    assert_eq!(p, dir.path().join("selection.json"));
    assert_eq!(
        fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let json: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["sigkeys"][0], Ski([7; 32]).to_hex());

    // Saving again replaces it.
    dir.save_selection(&Selection::default()).unwrap();
    assert_eq!(dir.load_selection().unwrap(), Selection::default());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn a_corrupt_file_is_an_error_naming_it_and_is_left_alone() {
    let (_t, dir) = files_dir();
    let p = dir.selection_path();
    fs::write(&p, b"{\"version\": 1, \"units\": [").unwrap();
    let err = dir.load_selection().unwrap_err();
    assert!(
        matches!(err, KeyFileError::SelectionJson { ref path, .. } if *path == p),
        "{err:?}"
    );
    assert!(err.to_string().contains(&p.display().to_string()), "{err}");
    assert_eq!(fs::read(&p).unwrap(), b"{\"version\": 1, \"units\": [");
}

#[test]
fn a_bad_ski_or_version_is_named() {
    let (_t, dir) = files_dir();
    let p = dir.selection_path();
    let good = Ski([3; 32]).to_hex();
    fs::write(
        &p,
        format!(r#"{{"version":1,"units":[],"sigkeys":["{good}","abc"]}}"#),
    )
    .unwrap();
    let err = dir.load_selection().unwrap_err();
    assert!(
        matches!(err, KeyFileError::SelectionSki { index: 1, .. }),
        "{err:?}"
    );

    fs::write(&p, br#"{"version":2,"units":[],"sigkeys":[]}"#).unwrap();
    let err = dir.load_selection().unwrap_err();
    assert!(
        matches!(err, KeyFileError::SelectionVersion { version: 2, .. }),
        "{err:?}"
    );
}
