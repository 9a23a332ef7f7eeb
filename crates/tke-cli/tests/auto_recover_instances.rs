//! `auto-recover --to-instance`: one instance's master key copied into the units of
//! another instance of the embedded fleet, through the real `tke` binary. Every refusal
//! (a unit holding another key, other thresholds, the other instance's keys under its own
//! master key, no confirmation, an instance that is not another one) changes nothing;
//! afterwards both instances hold one key, and a data key wrapped on one unwraps on the
//! other. Another fleet CA's instance (a second `tke-unitd`) is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;

use common::{
    terminal::{Answer::Line, Terminal},
    Workstation,
};
use serde_json::Value;
use tke_test_support::Server;

const PW: &[(&str, &str)] = &[("alice", "alice-password-1"), ("bob", "bob-password-22")];

/// Selects exactly the units `nums` of the two-instance fleet.
fn select(w: &Workstation, nums: &[&str]) {
    w.ok(&["cryptounit-rm", "1", "2", "3", "4", "5", "6", "7", "8"]);
    let mut args = vec!["cryptounit-add"];
    args.extend(nums);
    w.ok(&args);
}

/// Each unit's (current register state, current VP, new register state), units 1 to 8.
fn registers(w: &Workstation) -> Vec<(String, String, String)> {
    select(w, &["1", "2", "3", "4", "5", "6", "7", "8"]);
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

/// `auto-recover` refused with the snapshot `name` (exit code 1), changing no file of the
/// workstation (unit states, key storage, selection).
fn refused(w: &Workstation, name: &str, args: &[&str]) {
    let before = w.snapshot();
    w.check(name, args, 1, &[]);
    assert_eq!(before, w.snapshot(), "{name}: a refused run changed files");
}

/// `auto-init --instance N` with alice and bob, thresholds 2/1, on the units `nums`.
fn auto_init(w: &Workstation, s: &str, instance: &str, nums: &[&str]) {
    select(w, nums);
    let mut args = common::auto_init_args(s, (2, 1), &["alice", "bob"]);
    args.extend(["--instance".to_owned(), instance.to_owned()]);
    w.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn another_instance_receives_the_key_only_when_named_and_then_unwraps_its_data_keys() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init", "--instances", "2"]);
    w.file_keys(PW);
    let s = w.secrets(PW).to_str().unwrap().to_owned();
    let units: Value = serde_json::from_str(&w.ok(&["cryptounits", "--output", "json"])).unwrap();
    let instance_of = |i: usize| units[i]["instance"].as_str().unwrap().to_owned();
    let (a, b) = (instance_of(0), instance_of(4));
    assert_ne!(a, b);

    // Instance A: initialized, a root key and a data key wrapped under it.
    auto_init(&w, &s, "1", &["1", "2", "3", "4"]);
    let vp_a = registers(&w)[0].1.clone();
    let key = w
        .ok(&["kms", "create", "--instance", "1", "--name", "payroll"])
        .trim()
        .to_owned();
    let data = w.path().join("data.key");
    let bytes: Vec<u8> = (0..32u8).collect();
    fs::write(&data, &bytes).unwrap();
    let wrapped = w.path().join("data.key.wrapped");
    let (data_s, wrapped_s) = (data.to_str().unwrap(), wrapped.to_str().unwrap());
    w.ok(&[
        "kms",
        "create",
        "--instance",
        "1",
        "--name",
        "spare",
        "--count",
        "2",
    ]);
    w.ok(&[
        "kms",
        "wrap",
        "--instance",
        "1",
        "--key",
        &key,
        "--in",
        data_s,
        "--out",
        wrapped_s,
    ]);

    // Instance B with a master key of its own, protecting a key of its own: never
    // overwritten.
    auto_init(&w, &s, "2", &["5", "6", "7", "8"]);
    w.ok(&["kms", "create", "--instance", "2", "--name", "b-own"]);
    let recover = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["--secrets", &s, "auto-recover", "--instance", "1"]
            .map(str::to_owned)
            .to_vec();
        args.extend(extra.iter().map(|x| (*x).to_owned()));
        args
    };
    let run = |name: &str, extra: &[&str]| {
        let args = recover(extra);
        refused(
            &w,
            name,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
    };
    run(
        "auto_recover_to_instance_holding_another_key",
        &["--to-instance", &b, "--yes"],
    );
    // Not another instance of the fleet: refused before any unit is asked anything.
    run(
        "auto_recover_to_instance_not_another",
        &[
            "--to-instance",
            &a,
            "--to-instance",
            "no-such-instance",
            "--yes",
        ],
    );
    run(
        "auto_recover_force_with_keys_not_a_target",
        &["--force-with-keys", &b, "--yes"],
    );

    // B's units zeroized (B's key storage protects b-own: forced) and brought out of
    // imprint mode with other thresholds: refused.
    select(&w, &["5", "6", "7", "8"]);
    w.ok(&[
        "--secrets",
        &s,
        "cryptounit-zeroize",
        "--force-with-keys",
        &b,
        "--yes",
    ]);
    w.install_admins(&s, &["alice", "bob"], (1, 1));
    run(
        "auto_recover_to_instance_thresholds_differ",
        &["--to-instance", &b, "--yes"],
    );
    w.ok(&[
        "--secrets",
        &s,
        "cryptounit-thrhld-set",
        "--sig-threshold",
        "2",
        "--rev-threshold",
        "1",
    ]);

    // B's key storage still holds b-own under B's lost key: refused unless forced.
    run(
        "auto_recover_to_instance_keys_under_another_key",
        &["--to-instance", &b, "--yes"],
    );
    // A key storage that cannot be read counts as holding such keys.
    let b_store = w
        .path()
        .join("local")
        .join("keys")
        .join(format!("{b}.keys"));
    let kept = fs::read(&b_store).unwrap();
    fs::write(&b_store, b"not a key storage, but no less than a hundred bytes long: SQLite must read a header from it").unwrap();
    run(
        "auto_recover_to_instance_key_storage_unreadable",
        &["--to-instance", &b, "--yes"],
    );
    fs::write(&b_store, kept).unwrap();
    // No confirmation (no terminal, no --yes): refused, the question naming instance B.
    run(
        "auto_recover_to_instance_not_confirmed",
        &["--to-instance", &b, "--force-with-keys", &b],
    );

    // On a terminal the question names the other instance plainly; "n" cancels.
    let before = w.snapshot();
    let args = recover(&["--to-instance", &b, "--force-with-keys", &b]);
    let mut t = Terminal::spawn(&w, &args.iter().map(String::as_str).collect::<Vec<_>>());
    t.expect("(y/N)");
    t.answer(&Line("n"));
    let (text, code) = t.finish();
    assert_eq!(code, 3, "{text}");
    let asked = format!(
        "into crypto unit(s) 5, 6, 7, 8 of ANOTHER service instance, {b}, which will then share the master key of service instance {a}"
    );
    assert!(
        text.replace("\r\n", " ")
            .replace('\n', " ")
            .contains(&asked),
        "{text}"
    );
    assert_eq!(before, w.snapshot(), "a cancelled run changed files");

    // A run killed after the first import into B is finished by the next one, which
    // resumes those units at commit.
    let args = recover(&["--to-instance", &b, "--force-with-keys", &b, "--yes"]);
    w.crash(
        "auto-recover:after-import",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(
        registers(&w)[4..]
            .iter()
            .any(|r| (r.0.as_str(), r.2.as_str()) == ("empty", "full_uncommitted")),
        "{:?}",
        registers(&w)
    );
    let args = recover(&[
        "--to-instance",
        &b,
        "--force-with-keys",
        &b,
        "--yes",
        "--output",
        "json",
    ]);
    let out: Value =
        serde_json::from_str(&w.ok(&args.iter().map(String::as_str).collect::<Vec<_>>())).unwrap();
    assert_eq!(out["recovered"], serde_json::json!([5, 6, 7, 8]), "{out}");
    assert!(!out["resumed"].as_array().unwrap().is_empty(), "{out}");
    assert_eq!(out["to_instances"], serde_json::json!([b]), "{out}");
    assert_eq!(out["vp"], vp_a.as_str());
    for (num, r) in registers(&w).iter().enumerate() {
        assert_eq!(
            (r.0.as_str(), r.1.as_str(), r.2.as_str()),
            ("valid", vp_a.as_str(), "empty"),
            "crypto unit {}",
            num + 1
        );
    }
    // Running it again: nothing left to do, in either instance.
    let again = w.ok(&recover(&["--to-instance", &b, "--yes"])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert!(again.contains("there is nothing to recover"), "{again}");

    // B's units unwrap A's data key: with A's key storage shared with B (copied here),
    // `kms unwrap --instance 2` gives the same bytes back.
    let keys = w.path().join("local").join("keys");
    // The SQLite file and whatever journal files it has, B's own replaced.
    for entry in fs::read_dir(&keys).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.starts_with(&format!("{b}.keys")) {
            fs::remove_file(keys.join(&name)).unwrap();
        }
    }
    for entry in fs::read_dir(&keys).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(rest) = name.strip_prefix(&format!("{a}.keys")) {
            fs::copy(keys.join(&name), keys.join(format!("{b}.keys{rest}"))).unwrap();
        }
    }
    let again = w.path().join("data.key.again");
    w.ok(&[
        "kms",
        "unwrap",
        "--instance",
        "2",
        "--key",
        &key,
        "--in",
        wrapped_s,
        "--out",
        again.to_str().unwrap(),
    ]);
    assert_eq!(fs::read(&again).unwrap(), bytes);
    // And the other way round: a data key wrapped by B unwraps on A.
    let by_b = w.path().join("data.key.by-b");
    w.ok(&[
        "kms",
        "wrap",
        "--instance",
        "2",
        "--key",
        &key,
        "--in",
        data_s,
        "--out",
        by_b.to_str().unwrap(),
    ]);
    let back = w.path().join("data.key.back");
    w.ok(&[
        "kms",
        "unwrap",
        "--instance",
        "1",
        "--key",
        &key,
        "--in",
        by_b.to_str().unwrap(),
        "--out",
        back.to_str().unwrap(),
    ]);
    assert_eq!(fs::read(&back).unwrap(), bytes);
}

/// Two `tke-unitd` servers, each with a fleet CA of its own: the other server's instance
/// never receives the key, each of its units refused before anything is sent.
#[test]
fn an_instance_of_another_fleet_ca_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let mut a = Server::init(r, "a", &["--operational", "1", "--recovery", "1"]);
    let mut b = Server::init(r, "b", &["--operational", "1", "--recovery", "1"]);
    a.start();
    b.start();
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.file_keys(PW);
    let s = w.secrets(PW).to_str().unwrap().to_owned();
    w.add_target(&a, &a);
    w.add_target(&b, &b);
    let units: Value = serde_json::from_str(&w.ok(&["cryptounits", "--output", "json"])).unwrap();
    let other = units[2]["instance"].as_str().unwrap().to_owned();
    w.ok(&["cryptounit-add", "1", "2"]);
    let mut args = common::auto_init_args(&s, (2, 1), &["alice", "bob"]);
    args.extend(["--instance".to_owned(), "1".to_owned()]);
    w.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    // The other instance out of imprint mode, as the first.
    w.ok(&["cryptounit-rm", "1", "2"]);
    w.ok(&["cryptounit-add", "3", "4"]);
    w.install_admins(&s, &["alice", "bob"], (2, 1));
    let before = w.snapshot();
    w.check(
        "auto_recover_to_instance_other_fleet_ca",
        &[
            "--secrets",
            &s,
            "auto-recover",
            "--instance",
            "1",
            "--to-instance",
            &other,
            "--yes",
        ],
        1,
        &[(r, "[SERVERS]")],
    );
    assert_eq!(before, w.snapshot(), "a refused run changed files");
    // The other server's units: out of imprint mode, both registers still empty.
    w.ok(&["cryptounit-add", "1", "2", "3", "4"]);
    for u in w.compare_json().as_array().unwrap()[2..].iter() {
        assert_eq!(u["current_mk"]["state"], "empty", "{u}");
        assert_eq!(u["new_mk"]["state"], "empty", "{u}");
    }
}
