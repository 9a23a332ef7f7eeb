//! What the ceremony-file tests share: the operator's workstation after auto-init (holding
//! no key afterwards) and the administrators' own workstations, each with its own key.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde_json::Value;
use tke_client::{Client, EmbeddedFleet, Transport};
use tke_sigkey::Signer;
use tke_sigkey_file::FileSigner;
use tke_test_support::mk::load_new_register;
use tke_workstation::{FilesDir, Password};

use crate::common::{snap, Workstation};

pub const ALICE: (&str, &str) = ("alice", "alice-password-1");
pub const BOB: (&str, &str) = ("bob", "bob-password-22");

/// An administrator's own workstation (their key only) and its secrets file.
pub struct Admin {
    pub w: Workstation,
    pub secrets: String,
    pub name: &'static str,
    pub password: &'static str,
}

pub fn admin((name, password): (&'static str, &'static str)) -> Admin {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    let secrets = w.file_keys(&[(name, password)]);
    Admin {
        w,
        secrets,
        name,
        password,
    }
}

impl Admin {
    /// Approves its own copy of `file` (mailed to it) and returns the copy.
    pub fn approve(&self, file: &Path) -> PathBuf {
        let copy = self.w.path().join(file.file_name().unwrap());
        if copy != file {
            fs::copy(file, &copy).unwrap();
        }
        self.w.ok(&[
            "--secrets",
            &self.secrets,
            "approve",
            arg(&copy),
            "--admin",
            self.name,
            "--yes",
        ]);
        copy
    }

    /// Its signature key, opened.
    pub fn signer(&self) -> FileSigner {
        let files = FilesDir::resolve(Some(self.w.path())).unwrap();
        let keys = files.signature_keys().unwrap();
        FileSigner::open(&keys.entries[0], &Password::new(self.password)).unwrap()
    }
}

/// The operator's workstation (the embedded fleet: units 1, 2 operational, 3, 4 recovery,
/// every unit selected) after auto-init with alice and bob, thresholds 2/1; the keys were
/// copied in for auto-init and removed again.
pub struct Setup {
    pub operator: Workstation,
    pub alice: Admin,
    pub bob: Admin,
}

pub fn setup() -> Setup {
    let s = imprint();
    s.with_keys(|secrets| {
        s.operator.auto_init(secrets, (2, 1), &["alice", "bob"]);
    });
    s
}

/// The operator's fresh workstation (units 1, 2 operational, 3, 4 recovery, all selected,
/// in imprint mode) and alice's and bob's own workstations.
pub fn imprint() -> Setup {
    let operator = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    operator.ok(&["local", "init"]);
    operator.ok(&["cryptounit-add", "1", "2", "3", "4"]);
    Setup {
        operator,
        alice: admin(ALICE),
        bob: admin(BOB),
    }
}

impl Setup {
    /// Runs `f` on the operator's workstation with alice's and bob's keys copied in (as
    /// a direct ceremony needs them) and their secrets file; removes both again.
    pub fn with_keys(&self, f: impl FnOnce(&str)) {
        let mut copied = Vec::new();
        for a in [&self.alice, &self.bob] {
            for e in fs::read_dir(a.w.path()).unwrap() {
                let from = e.unwrap().path();
                let name = from.file_name().unwrap().to_str().unwrap().to_owned();
                if name.ends_with(".key.pem") || name.ends_with(".crt.pem") {
                    let to = self.operator.path().join(name);
                    fs::copy(&from, &to).unwrap();
                    copied.push(to);
                }
            }
        }
        let secrets = self.operator.secrets(&[ALICE, BOB]);
        f(secrets.to_str().unwrap());
        for c in copied {
            fs::remove_file(c).unwrap();
        }
        fs::remove_file(secrets).unwrap();
    }

    /// Approves the file's current round by alice then bob (each on their own copy,
    /// mailed on) and brings it back to the operator.
    pub fn approve_round(&self, file: &Path) {
        let at_bob = self.bob.approve(&self.alice.approve(file));
        fs::copy(at_bob, file).unwrap();
    }
}

/// `tke --output json ARGS` on `w`, parsed.
pub fn json(w: &Workstation, args: &[&str]) -> Value {
    let out = w.ok(&[&["--output", "json"], args].concat());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}:\n{out}"))
}

/// A root key made by `tke kms create --count 3` (the first) wrapping a data key with
/// `tke kms wrap`: its id, the data and the wrapped file.
pub fn stored_key(w: &Workstation) -> (String, Vec<u8>, Vec<u8>) {
    let made = json(w, &["kms", "create", "--name", "root", "--count", "3"]);
    let root = made[0]["id"].as_str().unwrap().to_owned();
    let data = b"data key 0123456789abcdef.......".to_vec();
    let (plain, wrapped) = (w.path().join("data"), w.path().join("data.wrapped"));
    fs::write(&plain, &data).unwrap();
    let args = ["kms", "wrap", "--key", &root, "--in", arg(&plain)];
    w.ok(&[&args[..], &["--out", arg(&wrapped)]].concat());
    (root, data, fs::read(&wrapped).unwrap())
}

/// `tke kms unwrap` of the wrapped data key gives the data again.
pub fn unwraps(w: &Workstation, (root, data, wrapped): &(String, Vec<u8>, Vec<u8>)) {
    let (from, to) = (w.path().join("in.wrapped"), w.path().join("out"));
    fs::write(&from, wrapped).unwrap();
    let _ = fs::remove_file(&to);
    let args = ["kms", "unwrap", "--key", root, "--in", arg(&from)];
    w.ok(&[&args[..], &["--out", arg(&to)]].concat());
    assert_eq!(&fs::read(&to).unwrap(), data);
}

/// The VP of every record in key storage.
pub fn stored_vps(w: &Workstation) -> Vec<String> {
    json(w, &["kms", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["vp"].as_str().unwrap().to_owned())
        .collect()
}

/// Every unit's current VP.
pub fn current_vps(w: &Workstation) -> Vec<Value> {
    w.compare_json()
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["current_mk"]["vp"].clone())
        .collect()
}

pub fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The embedded fleet of `w` through the library.
pub fn library(w: &Workstation) -> Client {
    let fleet = EmbeddedFleet::open(&w.path().join("local")).unwrap();
    let ca = fleet.ca().clone();
    Client::connect(vec![(Arc::new(fleet) as Arc<dyn Transport>, ca)]).unwrap()
}

/// Per unit: (new register state, current register state, imprint mode).
pub fn states(w: &Workstation) -> Vec<(String, String, bool)> {
    w.compare_json()
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["new_mk"]["state"].as_str().unwrap().to_owned(),
                u["current_mk"]["state"].as_str().unwrap().to_owned(),
                u["imprint_mode"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// `tke plan COMMAND --out DIR/NAME.json` (with `extra` flags) on the operator's
/// workstation; the file's path.
pub fn plan(w: &Workstation, command: &str, extra: &[&str]) -> PathBuf {
    let out = w.path().join(format!("{command}.json"));
    w.ok(&[&["plan", command], extra, &["--out", arg(&out)]].concat());
    out
}

/// The commands of the file's last round (its only one in a single-round file): `(CRYPTO
/// UNIT NUM, summary)`, in order.
pub fn summaries(file: &Path) -> Vec<(u64, String)> {
    let v: Value = serde_json::from_str(&fs::read_to_string(file).unwrap()).unwrap();
    let rounds = v["rounds"].as_array().unwrap();
    rounds.last().unwrap()["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["num"].as_u64().unwrap(),
                c["summary"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Stderr of a failed run, the directories labelled, for a snapshot.
pub fn failure(s: &Setup, w: &Workstation, args: &[&str], code: i32) -> String {
    let stderr = w.fails(args, code);
    let paths = [
        (s.operator.path(), "[WS]"),
        (s.alice.w.path(), "[ALICE]"),
        (s.bob.w.path(), "[BOB]"),
    ];
    snap::redact_paths(&stderr, &paths)
}

/// `tke apply FILE --yes` exits with `code` (stderr as snapshot `name`) and no file of
/// the operator's workstation (the units included) changes.
pub fn refused(s: &Setup, file: &Path, extra: &[&str], code: i32, name: &str) {
    let before = s.operator.snapshot();
    let args = [&["apply", arg(file), "--yes"], extra].concat();
    snap::assert_snapshot(name, &failure(s, &s.operator, &args, code));
    assert_eq!(before, s.operator.snapshot(), "{name}: something changed");
}

pub fn apply(s: &Setup, file: &Path, extra: &[&str]) -> String {
    s.operator
        .ok(&[&["apply", arg(file), "--yes"], extra].concat())
}

/// A random value generated in recovery unit 3's new register and copied into the new
/// registers of `targets`, signed by alice and bob (through the library).
pub fn load_new(s: &Setup, targets: &[usize]) {
    let keys = [s.alice.signer(), s.bob.signer()];
    let signers: Vec<&dyn Signer> = keys.iter().map(|k| k as &dyn Signer).collect();
    let client = library(&s.operator);
    let unit = |n: usize| &client.units()[n - 1];
    let targets: Vec<_> = targets.iter().map(|&n| unit(n)).collect();
    load_new_register(&client, unit(3), &targets, &signers);
}
