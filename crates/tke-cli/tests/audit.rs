//! `tke cryptounit-audit` through the real binary: after auto-init and a threshold change
//! each unit's log shows every command with its signers; zeroize keeps the log; a record
//! edited, removed or cut on a unit's disk is reported as tampering.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{fs, path::PathBuf};

use common::Workstation;
use serde_json::Value;

const PW: &[(&str, &str)] = &[("alice", "alice-password-1"), ("bob", "bob-password-22")];

fn json(w: &Workstation, args: &[&str]) -> Value {
    let out = w.ok(&[args, &["--output", "json"]].concat());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}:\n{out}"))
}

/// The SKIs of the workstation's keys, by name.
fn ski(w: &Workstation, name: &str) -> String {
    let keys = json(w, &["sigkeys"]);
    keys.as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .unwrap()["ski"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The audit log file of the embedded unit `id`.
fn log_file(w: &Workstation, id: &str) -> PathBuf {
    w.path().join("local/units").join(id).join("audit.log")
}

/// (command, signer names) of each record of `unit` (one entry of the JSON output), after
/// checking the counters run from 1 to the unit's counter.
fn commands(unit: &Value) -> Vec<(String, Vec<String>)> {
    assert_eq!(unit["verified"], true, "{unit}");
    let records = unit["records"].as_array().unwrap();
    let counters: Vec<u64> = records
        .iter()
        .map(|r| r["counter"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=unit["counter"].as_u64().unwrap()).collect();
    assert_eq!(counters, expected, "{unit}");
    for pair in records.windows(2) {
        assert_eq!(pair[1]["prev"], pair[0]["hash"]);
    }
    records
        .iter()
        .map(|r| {
            // Records list signers by SKI order; compare names sorted.
            let mut names: Vec<String> = r["signer_names"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap_or("?").to_owned())
                .collect();
            names.sort();
            (r["command"].as_str().unwrap().to_owned(), names)
        })
        .collect()
}

fn named(list: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    list.iter()
        .map(|(c, s)| (c.to_string(), s.iter().map(|n| n.to_string()).collect()))
        .collect()
}

#[test]
fn the_log_shows_each_command_with_its_signers_and_tampering_is_reported() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init"]);
    let s = w.file_keys(PW);
    w.ok(&["cryptounit-add", "1", "2", "3", "4"]);
    w.auto_init(&s, (2, 1), &["alice", "bob"]);
    w.ok(&[
        "--secrets",
        &s,
        "cryptounit-thrhld-set",
        "--sig-threshold",
        "2",
        "--rev-threshold",
        "2",
    ]);

    let units = json(&w, &["cryptounit-audit"]);
    let units = units.as_array().unwrap();
    assert_eq!(units.len(), 4);
    let ab: &[&str] = &["alice", "bob"];
    let init = [
        ("addAdmin", &[][..]),
        ("addAdmin", &[][..]),
        ("setThresholds", ab),
    ];
    for u in units {
        let got = commands(u);
        let mut expected: Vec<(&str, &[&str])> = init.to_vec();
        if u["type"] == "recovery" && got[3].0 == "generateRandomMk" {
            // The recovery unit that made the master key and exported it to the others.
            expected.push(("generateRandomMk", &["alice"][..]));
            expected.push(("exportMkBatch", ab));
        } else {
            expected.extend([
                ("generateImporter", &["alice"][..]),
                ("importMk", &["alice"][..]),
                ("commitMk", ab),
                ("setImmediate", &["alice"][..]),
            ]);
        }
        expected.push(("setThresholds", ab));
        assert_eq!(got, named(&expected), "{u}");
        let last = u["records"].as_array().unwrap().last().unwrap().clone();
        let mut skis = vec![ski(&w, "alice"), ski(&w, "bob")];
        skis.sort();
        assert_eq!(last["signers"], Value::from(skis));
        assert_eq!(
            (last["rc"].as_u64(), last["reason"].as_u64()),
            (Some(0), Some(0))
        );
    }

    // The table names the signers; --from shows the tail, checked from there.
    let table = w.ok(&["cryptounit-audit"]);
    assert!(
        table.contains("setThresholds") && table.contains("alice, bob"),
        "{table}"
    );
    let counter = units[0]["counter"].as_u64().unwrap();
    let tail = json(&w, &["cryptounit-audit", "--from", &counter.to_string()]);
    let tail = &tail.as_array().unwrap()[0];
    assert_eq!(tail["verified"], true);
    assert_eq!(tail["records"].as_array().unwrap().len(), 1);
    assert_eq!(
        tail["records"][0],
        units[0]["records"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone()
    );

    // Zeroize keeps the log; the signers are still named, from the workstation's keys.
    w.ok(&["cryptounit-rm", "1", "3", "4"]);
    w.ok(&["--secrets", &s, "cryptounit-zeroize", "--yes"]);
    let after = json(&w, &["cryptounit-audit"]);
    let after = &after.as_array().unwrap()[0];
    let before = units.iter().find(|u| u["id"] == after["id"]).unwrap();
    let (mut got, mut was) = (commands(after), commands(before));
    assert_eq!(got.pop().unwrap().0, "zeroize");
    assert_eq!(got, was);
    was.clear();

    // Tampering on the unit's disk: one command rewritten, a record removed, the tail cut.
    let file = log_file(&w, after["id"].as_str().unwrap());
    let good = fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    let write = |lines: &[String]| {
        fs::write(
            &file,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap()
    };
    let owned = || lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    // Record 2 is an addAdmin (ENUMERATED 2 after the counter): make it a removeAdmin.
    let mut edited = owned();
    assert_eq!(&edited[1][4..16], "0201020a0102", "{}", edited[1]);
    edited[1].replace_range(10..16, "0a0104");
    write(&edited);
    w.check("audit_edited_record", &["cryptounit-audit"], 1, &[]);
    let mut removed = owned();
    removed.remove(2);
    write(&removed);
    w.check("audit_removed_record", &["cryptounit-audit"], 1, &[]);
    let mut cut = owned();
    cut.truncate(cut.len() - 2);
    write(&cut);
    w.check("audit_truncated_log", &["cryptounit-audit"], 1, &[]);
    let tampered = json_failing(&w);
    assert_eq!(tampered[0]["verified"], false);
    assert!(tampered[0]["tampering"]
        .as_str()
        .unwrap()
        .contains("truncated"));
    // Restored, it checks again.
    write(&owned());
    commands(&json(&w, &["cryptounit-audit"])[0]);
}

/// `cryptounit-audit --output json` that fails (exit 1): its standard output.
fn json_failing(w: &Workstation) -> Value {
    let o = w.run(&["cryptounit-audit", "--output", "json"]);
    assert_eq!(o.status.code(), Some(1));
    serde_json::from_slice(&o.stdout).unwrap()
}
