//! `tke kms` through the real binary on the embedded fleet: root keys created, listed,
//! shown and deleted; data keys wrapped and unwrapped to the same bytes; every refusal
//! with its snapshot and nothing changed; create, wrap and unwrap refused during a
//! rotation (begun through the library) while list and show still work.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{fs, os::unix::fs::PermissionsExt, path::Path, sync::Arc};

use common::Workstation;
use serde_json::Value;
use tke_client::{Client, EmbeddedFleet, Transport};

const PW: &[(&str, &str)] = &[("alice", "alice-password-1")];

/// A workstation with the default embedded fleet initialized by alice.
fn initialized() -> Workstation {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init"]);
    let s = w.file_keys(PW);
    w.auto_init(&s, (1, 1), &["alice"]);
    w
}

fn json(w: &Workstation, args: &[&str]) -> Value {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let out = w.ok(&all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}:\n{out}"))
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `kms VERB --key KEY --in IN --out OUT`.
fn file_args<'a>(verb: &'a str, key: &'a str, input: &'a str, out: &'a str) -> Vec<&'a str> {
    vec!["kms", verb, "--key", key, "--in", input, "--out", out]
}

#[test]
fn keys_are_created_listed_shown_deleted_and_data_keys_round_trip() {
    let w = initialized();
    let one = json(
        &w,
        &["kms", "create", "--instance", "1", "--name", "payroll"],
    );
    let id = one["id"].as_str().unwrap().to_owned();
    assert_eq!(one["name"], "payroll");
    assert_eq!(one.as_object().unwrap().len(), 2, "{one}");
    let plain = w.ok(&["kms", "create", "--name", "plain"]);
    assert_eq!(plain.trim().len(), 36, "one id, a UUID: {plain}");
    let three = json(
        &w,
        &[
            "kms",
            "create",
            "--instance",
            "1",
            "--name",
            "batch",
            "--count",
            "3",
        ],
    );
    let names: Vec<&str> = three
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["batch-1", "batch-2", "batch-3"]);

    let list = json(&w, &["kms", "list", "--instance", "1"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 5);
    assert_eq!(list[0]["id"], id.as_str(), "creation order");
    let vp = list[0]["vp"].as_str().unwrap();
    assert_eq!(vp.len(), 64);
    assert!(list[0]["created"].as_str().unwrap().ends_with('Z'));
    let table = w.ok(&["kms", "list", "--instance", "1"]);
    assert!(
        table.contains("KEY ID") && table.contains("payroll"),
        "{table}"
    );
    let shown = json(&w, &["kms", "show", "--instance", "1", "--key", &id]);
    assert_eq!(shown, list[0]);

    // A data key wrapped and unwrapped to the same bytes, in new 0600 files.
    let data = w.path().join("data.key");
    let bytes: Vec<u8> = (0..48u8).collect();
    fs::write(&data, &bytes).unwrap();
    let wrapped = w.path().join("data.key.wrapped");
    let again = w.path().join("data.key.again");
    w.ok(&file_args("wrap", &id, path_str(&data), path_str(&wrapped)));
    assert_eq!(&fs::read(&wrapped).unwrap()[..4], b"TKEW");
    w.ok(&file_args(
        "unwrap",
        &id,
        path_str(&wrapped),
        path_str(&again),
    ));
    assert_eq!(fs::read(&again).unwrap(), bytes);
    assert_eq!(
        fs::metadata(&again).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Every refusal: its message, and nothing changed.
    let other = three[0]["id"].as_str().unwrap().to_owned();
    let before = w.snapshot();
    let missing = "01234567-89ab-4def-8123-456789abcdef";
    let fresh = w.path().join("fresh.out");
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "kms_show_no_such_key",
            vec!["kms", "show", "--key", missing],
        ),
        (
            "kms_delete_no_such_key",
            vec!["kms", "delete", "--key", missing],
        ),
        ("kms_key_not_an_id", vec!["kms", "show", "--key", "payroll"]),
        ("kms_bad_name", vec!["kms", "create", "--name", "pay roll"]),
        (
            "kms_no_such_instance",
            vec!["kms", "list", "--instance", "2"],
        ),
        (
            "kms_unwrap_under_another_key",
            file_args("unwrap", &other, path_str(&wrapped), path_str(&fresh)),
        ),
        (
            "kms_unwrap_not_a_wrapped_key",
            file_args("unwrap", &id, path_str(&data), path_str(&fresh)),
        ),
        (
            "kms_wrap_out_exists",
            file_args("wrap", &id, path_str(&data), path_str(&again)),
        ),
        (
            "kms_wrap_empty_data_key",
            file_args("wrap", &id, "/dev/null", path_str(&fresh)),
        ),
    ];
    for (name, args) in &cases {
        w.check(name, args, 1, &[]);
    }
    w.check(
        "usage_kms_count_zero",
        &["kms", "create", "--name", "x", "--count", "0"],
        2,
        &[],
    );
    assert_eq!(before, w.snapshot(), "a refused command changed files");

    w.ok(&["kms", "delete", "--instance", "1", "--key", &id]);
    let list = json(&w, &["kms", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 4);
    assert!(w
        .fails(&["kms", "show", "--key", &id], 1)
        .contains("no key with id"));
}

#[test]
fn before_auto_init_create_says_run_auto_init_first() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init"]);
    w.check(
        "kms_create_no_master_key",
        &["kms", "create", "--name", "k"],
        1,
        &[],
    );
    assert_eq!(json(&w, &["kms", "list"]), Value::Array(Vec::new()));
    // Neither the refused create nor the list made a key store: it is made by the
    // first write.
    assert!(!w.path().join("local").join("keys").exists());
}

#[test]
fn during_a_rotation_create_wrap_and_unwrap_are_refused_and_list_works() {
    let w = initialized();
    let id = w.ok(&["kms", "create", "--name", "k"]).trim().to_owned();
    let data = w.path().join("data.key");
    fs::write(&data, b"sixteen byte key").unwrap();
    let wrapped = w.path().join("data.key.wrapped");
    w.ok(&file_args("wrap", &id, path_str(&data), path_str(&wrapped)));

    // A rotation begun through the library, as a ceremony does.
    {
        let fleet = EmbeddedFleet::open(&w.path().join("local")).unwrap();
        let ca = fleet.ca().clone();
        let client = Client::connect(vec![(Arc::new(fleet) as Arc<dyn Transport>, ca)]).unwrap();
        let kms = client.key_service(&client.instances()[0]).unwrap().unwrap();
        let from = kms
            .show(&tke_keystore::KeyId::parse(&id).unwrap())
            .unwrap()
            .vp;
        kms.begin_rotation(tke_kms::Rotation {
            from,
            to: tke_proto::Vp([0x42; 32]),
        })
        .unwrap();
    }
    let before = w.snapshot();
    let out = w.path().join("out");
    w.check(
        "kms_create_during_rotation",
        &["kms", "create", "--name", "late"],
        1,
        &[],
    );
    w.check(
        "kms_wrap_during_rotation",
        &file_args("wrap", &id, path_str(&data), path_str(&out)),
        1,
        &[],
    );
    w.check(
        "kms_unwrap_during_rotation",
        &file_args("unwrap", &id, path_str(&wrapped), path_str(&out)),
        1,
        &[],
    );
    assert_eq!(before, w.snapshot(), "a refused command changed files");
    let list = json(&w, &["kms", "list"]);
    assert_eq!(list[0]["id"], id.as_str());
    json(&w, &["kms", "show", "--key", &id]);
}

#[test]
fn through_a_tke_unitd_server_the_same_commands_and_errors() {
    let root = tempfile::tempdir().unwrap();
    let mut server = tke_test_support::Server::init(
        root.path(),
        "srv",
        &["--operational", "2", "--recovery", "2"],
    );
    server.start();
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.add_target(&server, &server);
    let paths = [(root.path(), "[ROOT]")];
    w.check(
        "kms_remote_create_no_master_key",
        &["kms", "create", "--name", "k"],
        1,
        &paths,
    );
    let s = w.file_keys(PW);
    w.auto_init(&s, (1, 1), &["alice"]);

    let keys = json(
        &w,
        &[
            "kms",
            "create",
            "--instance",
            "1",
            "--name",
            "r",
            "--count",
            "2",
        ],
    );
    let id = keys[0]["id"].as_str().unwrap().to_owned();
    let data = w.path().join("data.key");
    fs::write(&data, b"a remote data key of 32 bytes!!!").unwrap();
    let wrapped = w.path().join("wrapped");
    let again = w.path().join("again");
    w.ok(&file_args("wrap", &id, path_str(&data), path_str(&wrapped)));
    w.ok(&file_args(
        "unwrap",
        &id,
        path_str(&wrapped),
        path_str(&again),
    ));
    assert_eq!(
        fs::read(&again).unwrap(),
        b"a remote data key of 32 bytes!!!"
    );
    assert_eq!(json(&w, &["kms", "list"]).as_array().unwrap().len(), 2);
    let missing = "01234567-89ab-4def-8123-456789abcdef";
    w.check(
        "kms_remote_show_no_such_key",
        &["kms", "show", "--key", missing],
        1,
        &paths,
    );
    let other = keys[1]["id"].as_str().unwrap();
    let err = w.fails(
        &file_args(
            "unwrap",
            other,
            path_str(&wrapped),
            path_str(&w.path().join("fresh")),
        ),
        1,
    );
    assert!(err.contains("was wrapped under root key"), "{err}");
    w.ok(&["kms", "delete", "--key", &id]);
    assert_eq!(json(&w, &["kms", "list"]).as_array().unwrap().len(), 1);

    // The server keeps the store in its data directory, 0600.
    let stores: Vec<_> = fs::read_dir(server.dir.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "keys"))
        .collect();
    assert_eq!(stores.len(), 1, "{stores:?}");
    assert_eq!(
        fs::metadata(&stores[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );
    server.stop();
}
