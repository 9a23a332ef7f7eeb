//! Master key rotation and recovery with real keys in key storage, through the real
//! binary on the embedded fleet: 10,000 root keys made by `tke kms create --count`, each
//! wrapping a data key, survive `auto-mk-rotate` (every data key unwraps to the same bytes
//! under the same root key id, every record under the new VP, the new registers empty);
//! the same with `cryptounit-mk-rotate` after a key-part load and commit; the process
//! killed with SIGKILL at each crash point of both rotations and of `auto-recover`, each
//! record readable while the ceremony is stopped (unwrapped through the library with the
//! VP it is tagged with), `tke kms create` and `wrap` refused with "rotation in progress"
//! and `list` working, then `--resume` (or the rerun) losing no key; `auto-recover` into a
//! zeroized operational unit, after which that unit alone unwraps every data key; the
//! zeroize guard refusing `cryptounit-zeroize` and `cryptounit-mk-clrcur` while keys are
//! stored, and doing them with the typed confirmation; with `tke-unitd`, the server
//! SIGKILLed while a rotation is stopped, `--resume` refused while it is down and
//! finishing once it is back; and `tke-unitd` SIGKILLed while `auto-mk-rotate` runs (slow
//! units, killed during a re-encryption call): `tke` fails naming the server, the units
//! and `--resume` (snapshot), nothing is lost, and `--resume` finishes after a restart.
//! Every crash test also checks the workstation's journal: left at the crash (0600, no
//! password), where it stopped said by the refused rerun and by `--resume`, removed at
//! the end.
//!
//! `during-reencrypt` fires only with more than one re-encryption step
//! (`REENCRYPT_BATCH` records): the automated flow's test grows its store past that for
//! that one point, so that the other points stay cheap.
//!
//! The bulk wrap and unwrap of data keys goes through the library's `KeyService` (one
//! process; a `tke kms wrap` per key costs a process start and a fleet load each), and a
//! sample of them through `tke kms wrap` and `tke kms unwrap`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::BTreeMap, fs, sync::Arc};

use common::Workstation;
use serde_json::Value;
use tke_client::{kms::ClientUnits, Client, EmbeddedFleet, InstanceId, Transport};
use tke_keystore::{KeyId, KeyStore as _, SqliteKeyStore};
use tke_kms::{InstanceUnits as _, KeyService, UnitRef, WrappedDataKey};
use tke_proto::Vp;

/// The vendor's milestones, verbatim.
const COMMITTED: &str = common::ROTATION_COMMITTED;
const REWRAPPED: &str = common::ROTATION_REWRAPPED;
const PW: &[(&str, &str)] = common::PASSWORDS;

fn tke() -> Workstation {
    Workstation::new(env!("CARGO_BIN_EXE_tke"))
}

/// A fleet of 2 operational and 2 recovery units initialized by `auto-init` with alice
/// and bob, thresholds 2/2; the secrets file's path (with the key parts' passwords).
fn initialized() -> (Workstation, String) {
    let w = tke();
    w.ok(&["local", "init"]);
    w.file_keys(&PW[..2]);
    let s = w.secrets(PW).to_str().unwrap().to_owned();
    w.auto_init(&s, (2, 2), &["alice", "bob"]);
    (w, s)
}

fn json(w: &Workstation, args: &[&str]) -> Value {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let out = w.ok(&all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}:\n{out}"))
}

/// The embedded fleet as it is on disk now, through the library, and its one instance.
/// Opened afresh each time: `tke` changes the units' files between two looks.
fn library(w: &Workstation) -> (Client, InstanceId) {
    let fleet = EmbeddedFleet::open(&w.path().join("local")).unwrap();
    let ca = fleet.ca().clone();
    let client = Client::connect(vec![(Arc::new(fleet) as Arc<dyn Transport>, ca)]).unwrap();
    let instance = client.instances()[0].clone();
    (client, instance)
}

fn key_service(w: &Workstation) -> Arc<dyn KeyService> {
    let (client, instance) = library(w);
    client.key_service(&instance).unwrap().unwrap()
}

/// A data key wrapped under a root key of key storage, as `tke kms wrap` writes it.
struct DataKey {
    root: KeyId,
    plain: Vec<u8>,
    wrapped: Vec<u8>,
}

/// `count` root keys made by `tke kms create --count`, each wrapping its own 32-byte data
/// key (through the library); `sample` of them also wrapped and unwrapped through `tke kms
/// wrap` and `tke kms unwrap`.
fn keys_with_data(w: &Workstation, count: u32, sample: usize) -> Vec<DataKey> {
    keys_with_data_in(w, || key_service(w), count, sample)
}

/// [`keys_with_data`], the data keys wrapped through the key service `open` opens once
/// the root keys are made.
fn keys_with_data_in(
    w: &Workstation,
    open: impl Fn() -> Arc<dyn KeyService>,
    count: u32,
    sample: usize,
) -> Vec<DataKey> {
    let made = json(
        w,
        &[
            "kms",
            "create",
            "--name",
            "root",
            "--count",
            &count.to_string(),
        ],
    );
    let made = made.as_array().unwrap();
    assert_eq!(made.len(), count as usize);
    let kms = open();
    let keys: Vec<DataKey> = made
        .iter()
        .enumerate()
        .map(|(i, k)| {
            assert_eq!(k["name"], format!("root-{}", i + 1));
            let root = KeyId::parse(k["id"].as_str().unwrap()).unwrap();
            let plain = format!("data key number {i:016}").into_bytes();
            let wrapped = kms.wrap(&root, &plain).unwrap();
            DataKey {
                root,
                plain,
                wrapped,
            }
        })
        .collect();
    let step = (keys.len() / sample.max(1)).max(1);
    for (n, k) in keys.iter().step_by(step).take(sample).enumerate() {
        let (data, wrapped, again) = (
            w.path().join(format!("sample-{n}")),
            w.path().join(format!("sample-{n}.wrapped")),
            w.path().join(format!("sample-{n}.again")),
        );
        fs::write(&data, &k.plain).unwrap();
        let root = k.root.to_string();
        let file = |p: &std::path::Path| p.to_str().unwrap().to_owned();
        w.ok(&[
            "kms",
            "wrap",
            "--key",
            &root,
            "--in",
            &file(&data),
            "--out",
            &file(&wrapped),
        ]);
        w.ok(&[
            "kms",
            "unwrap",
            "--key",
            &root,
            "--in",
            &file(&wrapped),
            "--out",
            &file(&again),
        ]);
        assert_eq!(fs::read(&again).unwrap(), k.plain);
        // The CLI's file and the library's unwrap each other.
        let cli = fs::read(&wrapped).unwrap();
        assert_eq!(&*kms.unwrap(&k.root, &cli).unwrap(), k.plain.as_slice());
    }
    keys
}

/// Every data key unwraps through the key service to the same bytes; key storage lists
/// exactly the same root key ids, every one under the master key `vp`.
fn assert_every_key_unwraps(w: &Workstation, keys: &[DataKey], vp: &str) {
    assert_every_key_unwraps_in(w, key_service(w).as_ref(), keys, vp);
}

/// [`assert_every_key_unwraps`] through `kms`.
fn assert_every_key_unwraps_in(w: &Workstation, kms: &dyn KeyService, keys: &[DataKey], vp: &str) {
    for k in keys {
        let plain = kms
            .unwrap(&k.root, &k.wrapped)
            .unwrap_or_else(|e| panic!("root key {}: {e}", k.root));
        assert_eq!(&*plain, k.plain.as_slice(), "root key {}", k.root);
    }
    let list = json(w, &["kms", "list"]);
    let listed: BTreeMap<&str, &str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["id"].as_str().unwrap(), k["vp"].as_str().unwrap()))
        .collect();
    let ids: Vec<String> = keys.iter().map(|k| k.root.to_string()).collect();
    assert_eq!(
        listed.keys().copied().collect::<Vec<_>>(),
        {
            let mut sorted: Vec<&str> = ids.iter().map(String::as_str).collect();
            sorted.sort_unstable();
            sorted
        },
        "the same root key ids"
    );
    assert!(
        listed.values().all(|v| v.eq_ignore_ascii_case(vp)),
        "every record under {vp}"
    );
}

/// Each data key of `keys` (every `step`-th) unwraps, asked of the units `ask` directly
/// (not through the key service, which refuses during a rotation), with the root key
/// record as key storage holds it now and the VP it is tagged with. Returns how many
/// records were under each VP.
fn assert_readable_by(
    w: &Workstation,
    keys: &[DataKey],
    step: usize,
    ask: impl Fn(&UnitRef) -> bool,
) -> BTreeMap<Vp, usize> {
    readable_by(
        library(w),
        &w.path().join("local").join("keys"),
        keys,
        step,
        ask,
    )
}

/// [`assert_readable_by`] through `client` and the key store in `stores`.
fn readable_by(
    (client, instance): (Client, InstanceId),
    stores: &std::path::Path,
    keys: &[DataKey],
    step: usize,
    ask: impl Fn(&UnitRef) -> bool,
) -> BTreeMap<Vp, usize> {
    let calls = ClientUnits::new(client, instance.clone());
    let units: Vec<UnitRef> = calls
        .units()
        .unwrap()
        .into_iter()
        .filter(|u| ask(u))
        .collect();
    assert!(!units.is_empty());
    let store = SqliteKeyStore::open(&tke_client::kms::store_path(stores, &instance)).unwrap();
    let mut by_vp = BTreeMap::new();
    for k in keys.iter().step_by(step.max(1)) {
        let record = store.get(&k.root).unwrap();
        *by_vp.entry(record.vp).or_default() += 1;
        let file = WrappedDataKey::parse(&k.wrapped).unwrap();
        let plain = units
            .iter()
            .find_map(|u| {
                calls
                    .unwrap_data(u, &record.vp, &record.wrapped, &file.wrapped)
                    .ok()
            })
            .unwrap_or_else(|| {
                panic!(
                    "root key {} (under {}) is readable by none of {:?}",
                    k.root,
                    record.vp.to_hex(),
                    units.iter().map(|u| &u.label).collect::<Vec<_>>()
                )
            });
        assert_eq!(&*plain, k.plain.as_slice(), "root key {}", k.root);
    }
    by_vp
}

/// Every unit's (type, current VP or null, new register state, new VP or null).
fn registers(w: &Workstation) -> Vec<(String, Value, String, Value)> {
    w.compare_json()
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["type"].as_str().unwrap().to_owned(),
                u["current_mk"]["vp"].clone(),
                u["new_mk"]["state"].as_str().unwrap().to_owned(),
                u["new_mk"]["vp"].clone(),
            )
        })
        .collect()
}

/// Asserts that every unit holds one current value and an empty new register; returns
/// that value's VP.
fn one_current_value(w: &Workstation) -> String {
    let regs = registers(w);
    let vp = regs[0].1.as_str().unwrap().to_owned();
    for (t, current, new, new_vp) in &regs {
        assert_eq!(current.as_str(), Some(vp.as_str()), "{t}: {regs:?}");
        assert_eq!((new.as_str(), new_vp), ("empty", &Value::Null), "{t}");
    }
    vp
}

#[test]
fn ten_thousand_root_keys_survive_auto_mk_rotate() {
    let (w, s) = initialized();
    let keys = keys_with_data(&w, 10_000, 3);
    let old = one_current_value(&w);
    assert_every_key_unwraps(&w, &keys, &old);

    let out = w.ok(&["--secrets", &s, "auto-mk-rotate", "--yes"]);
    assert!(out.contains(COMMITTED) && out.contains(REWRAPPED), "{out}");
    assert!(
        out.contains("Re-encrypting key storage: 10000 of 10000 keys"),
        "{out}"
    );
    let new = one_current_value(&w);
    assert_ne!(new, old, "the VP changed in every unit");
    assert_every_key_unwraps(&w, &keys, &new);
}

/// `tke kms create` and `tke kms wrap` are refused with "rotation in progress", and
/// nothing changes; `tke kms list` still lists every key.
fn assert_create_and_wrap_wait(w: &Workstation, keys: &[DataKey], point: &str) {
    let before = w.snapshot();
    let err = w.fails(&["kms", "create", "--name", "late"], 1);
    assert!(err.contains("rotation in progress"), "{point}: {err}");
    let data = w.path().join("late.key");
    fs::write(&data, [7u8; 32]).unwrap();
    let before_data = w.snapshot();
    let root = keys[0].root.to_string();
    let out = w.path().join("late.key.wrapped");
    let err = w.fails(
        &[
            "kms",
            "wrap",
            "--key",
            &root,
            "--in",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("rotation in progress"), "{point}: {err}");
    assert_eq!(before_data, w.snapshot(), "{point}: a refused wrap wrote");
    fs::remove_file(&data).unwrap();
    assert_eq!(
        before,
        w.snapshot(),
        "{point}: a refused create changed files"
    );
    assert_listed(w, keys.len(), point);
}

fn assert_listed(w: &Workstation, n: usize, point: &str) {
    assert_eq!(
        json(w, &["kms", "list"]).as_array().unwrap().len(),
        n,
        "{point}: list"
    );
}

/// After a crash at `point` of a rotation from `old`: every record is readable with the
/// VP it is tagged with, under the old VP or the new one (both only inside the
/// re-encryption); while the rotation is recorded in key storage, create and wrap wait and
/// list works; otherwise list works.
fn assert_stopped_rotation(w: &Workstation, keys: &[DataKey], point: &str, old: &str) {
    let by_vp = assert_readable_by(w, keys, 1, |_| true);
    let step = point.split(':').nth(1).unwrap();
    let vps: Vec<String> = by_vp.keys().map(Vp::to_hex).collect();
    match step {
        // The first batch is under the new key, the rest under the old one.
        "during-reencrypt" => assert_eq!(vps.len(), 2, "{point}: {by_vp:?}"),
        "after-reencrypt" | "during-setimm" | "after-setimm" => {
            assert_eq!(vps.len(), 1, "{point}");
            assert!(!vps[0].eq_ignore_ascii_case(old), "{point}: {by_vp:?}");
        }
        _ => assert!(
            vps.len() == 1 && vps[0].eq_ignore_ascii_case(old),
            "{point}: {by_vp:?}"
        ),
    }
    if matches!(step, "after-begin" | "during-reencrypt") {
        assert_create_and_wrap_wait(w, keys, point);
    } else {
        assert_listed(w, keys.len(), point);
    }
}

/// Every crash point of `CMD`'s re-encryption and set-immediate steps.
const REENCRYPTION_STEPS: [&str; 5] = [
    "after-begin",
    "during-reencrypt",
    "after-reencrypt",
    "during-setimm",
    "after-setimm",
];

/// The last step a rotation's journal records when the run is killed at `point`
/// (`CMD:step`): a step is recorded once done everywhere, before the next begins.
fn journaled_step(point: &str) -> &'static str {
    match point.split(':').nth(1).unwrap() {
        "after-generate" | "during-transfer" => "key-generated",
        "after-transfer" => "key-transferred",
        "after-commit" => "key-committed",
        "after-begin" | "during-reencrypt" => "reencryption-begun",
        "after-reencrypt" | "during-setimm" => "key-storage-reencrypted",
        "after-setimm" => "set-immediate",
        other => panic!("no crash point {other}"),
    }
}

/// Runs `args` killed at `point`, checks the stopped state and the journal left (the
/// plain rerun and `--resume` say where it stopped), finishes with `resume` (or, where
/// nothing is left, sees it say so), checks that the journal is gone and that every key
/// unwraps under the new key.
fn crash_and_resume(
    w: &Workstation,
    keys: &[DataKey],
    point: &str,
    args: &[&str],
    resume: &[&str],
) {
    // The new register may hold the loaded key parts already (the key-part flow).
    let old = registers(w)[0].1.as_str().unwrap().to_owned();
    let out = w.crash(point, args);
    assert!(
        !out.contains("Master key rotation successful."),
        "{point}:\n{out}"
    );
    assert_stopped_rotation(w, keys, point, &old);
    let command = point.split(':').next().unwrap();
    let journal = w
        .journal(command)
        .unwrap_or_else(|| panic!("{point}: no journal"));
    let step = journaled_step(point);
    assert!(
        journal.contains(&format!("\"step\": \"{step}\"")),
        "{point}: {journal}"
    );
    let stopped = format!("{command} of service instance ");
    let after = format!(" was interrupted after step {step} at ");
    if !point.ends_with("after-setimm") {
        // A plain rerun is refused, naming --resume and where it stopped, and changes
        // nothing.
        let before = w.snapshot();
        let err = w.fails(args, 1);
        assert!(err.contains(" --resume`"), "{point}: {err}");
        assert!(
            err.contains(&stopped) && err.contains(&after),
            "{point}: {err}"
        );
        assert_eq!(
            before,
            w.snapshot(),
            "{point}: the refused rerun changed files"
        );
    }
    let out = w.ok(resume);
    assert!(
        out.contains(&stopped) && out.contains(&after),
        "{point}:\n{out}"
    );
    assert_eq!(w.journal(command), None, "{point}: the journal is left");
    if point.ends_with("after-setimm") {
        assert!(
            out.contains("There is nothing to resume."),
            "{point}:\n{out}"
        );
        assert!(
            out.contains("the crypto units show the rotation finished. The journal is removed."),
            "{point}:\n{out}"
        );
    } else {
        assert!(out.contains("was interrupted"), "{point}:\n{out}");
        assert!(
            out.contains("Master key rotation successful."),
            "{point}:\n{out}"
        );
        assert!(!out.contains("Generating"), "{point}: a second key\n{out}");
    }
    let new = one_current_value(w);
    assert_ne!(new, old, "{point}");
    assert_every_key_unwraps(w, keys, &new);
}

#[test]
fn auto_mk_rotate_killed_at_each_step_with_keys_stored_resumes_and_loses_none() {
    let (w, s) = initialized();
    let mut keys = keys_with_data(&w, 200, 2);
    let auto = ["--secrets", s.as_str(), "auto-mk-rotate", "--yes"];
    let resume = [&auto[..], &["--resume"]].concat();
    for step in [
        "after-generate",
        "during-transfer",
        "after-transfer",
        "after-commit",
    ]
    .into_iter()
    .chain(REENCRYPTION_STEPS)
    .filter(|s| *s != "during-reencrypt")
    {
        let point = format!("auto-mk-rotate:{step}");
        crash_and_resume(&w, &keys, &point, &auto, &resume);
    }
    // More than one re-encryption step, so that `during-reencrypt` fires: the first
    // batch under the new key, the rest under the old one, each readable.
    let batch = u32::try_from(tke_ceremony::rotate::REENCRYPT_BATCH).unwrap();
    keys.extend(keys_with_data(&w, batch, 0));
    crash_and_resume(&w, &keys, "auto-mk-rotate:during-reencrypt", &auto, &resume);
}

/// Loads the parts into every selected unit and commits them.
fn load_and_commit(w: &Workstation, s: &str, [a, b]: [&str; 2]) {
    w.ok(&[
        "--secrets",
        s,
        "cryptounit-mk-load",
        "--part",
        a,
        "--part",
        b,
    ]);
    w.ok(&["--secrets", s, "cryptounit-mk-commit"]);
}

#[test]
fn cryptounit_mk_rotate_with_keys_stored_and_killed_at_each_step() {
    // An instance without recovery units, initialized from master key parts.
    let w = tke();
    w.ok(&["local", "init", "--recovery", "0", "--failover", "2"]);
    w.file_keys(&PW[..2]);
    let s = w.secrets(PW).to_str().unwrap().to_owned();
    w.ok(&["cryptounit-add", "1", "2", "3", "4"]);
    w.install_admins(&s, &["alice", "bob"], (2, 2));
    for part in ["part a", "part b", "part c"] {
        w.ok(&["--secrets", &s, "mk-add", "--random", "--description", part]);
    }
    load_and_commit(&w, &s, ["part a", "part b"]);
    w.ok(&["--secrets", &s, "cryptounit-mk-setimm", "--yes"]);
    let keys = keys_with_data(&w, 1000, 2);
    let old = one_current_value(&w);
    assert_every_key_unwraps(&w, &keys, &old);

    let args = ["--secrets", s.as_str(), "cryptounit-mk-rotate", "--yes"];
    let resume = [&args[..], &["--resume"]].concat();
    load_and_commit(&w, &s, ["part b", "part c"]);
    let out = w.ok(&args);
    assert!(out.contains(REWRAPPED), "{out}");
    assert!(
        out.contains("Re-encrypting key storage: 1000 of 1000 keys"),
        "{out}"
    );
    let new = one_current_value(&w);
    assert_ne!(new, old);
    assert_every_key_unwraps(&w, &keys, &new);

    // `during-reencrypt` needs more than one re-encryption step: the automated flow's
    // test stops there (the step is the same code for both commands).
    let parts = [["part a", "part c"], ["part a", "part b"]];
    for (i, step) in REENCRYPTION_STEPS
        .into_iter()
        .filter(|s| *s != "during-reencrypt")
        .enumerate()
    {
        load_and_commit(&w, &s, parts[i % parts.len()]);
        let point = format!("cryptounit-mk-rotate:{step}");
        crash_and_resume(&w, &keys, &point, &args, &resume);
    }
}

/// Selects exactly the units `nums`.
fn select(w: &Workstation, nums: &[&str]) {
    w.ok(&["cryptounit-rm", "1", "2", "3", "4"]);
    w.ok(&[&["cryptounit-add"], nums].concat());
}

/// Installs alice and bob in the selected units (in imprint mode) and sets thresholds
/// 2/2, as the instance's other units have.
fn reimprint(w: &Workstation, s: &str) {
    w.ok(&["--secrets", s, "cryptounit-admin-add", "--admin", "alice"]);
    w.ok(&["--secrets", s, "cryptounit-admin-add", "--admin", "bob"]);
    let thresholds = ["--sig-threshold", "2", "--rev-threshold", "2"];
    w.ok(&[&["--secrets", s, "cryptounit-thrhld-set"], &thresholds[..]].concat());
}

/// The crypto unit numbered `num`, as the key service labels it (`NUM (UUID)`).
fn unit_num(num: usize) -> impl Fn(&UnitRef) -> bool {
    move |u| u.label.starts_with(&format!("{num} ("))
}

#[test]
fn the_zeroize_guard_then_auto_recover_with_keys_stored() {
    let (w, s) = initialized();
    let keys = keys_with_data(&w, 50, 1);
    let vp = one_current_value(&w);
    let instance = library(&w).1.to_string();
    let paths: [(&std::path::Path, &str); 0] = [];

    // Zeroize and clear-current refused while key storage holds keys: nothing changed.
    select(&w, &["1"]);
    for (name, command) in [
        ("zeroize_refused_with_keys", "cryptounit-zeroize"),
        ("clrcur_refused_with_keys", "cryptounit-mk-clrcur"),
    ] {
        let before = w.snapshot();
        w.check(name, &["--secrets", &s, command, "--yes"], 1, &paths);
        assert_eq!(before, w.snapshot(), "{command}: something changed");
    }
    // A wrong id typed on the terminal cancels; nothing changed.
    let before = w.snapshot();
    let mut t = common::terminal::Terminal::spawn(&w, &["--secrets", &s, "cryptounit-zeroize"]);
    t.expect("type the service instance id");
    t.answer(&common::terminal::Answer::Line("not-the-id"));
    let (text, code) = t.finish();
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("Cancelled. No crypto unit was changed."),
        "{text}"
    );
    assert_eq!(
        before,
        w.snapshot(),
        "a cancelled zeroize changed something"
    );

    // The typed confirmation on a terminal: unit 1 zeroized.
    let mut t = common::terminal::Terminal::spawn(&w, &["--secrets", &s, "cryptounit-zeroize"]);
    t.expect("type the service instance id");
    t.answer(&common::terminal::Answer::Line(&instance));
    // Then the confirmation every zeroize asks.
    t.expect("(y/N)");
    t.answer(&common::terminal::Answer::Line("y"));
    let (text, code) = t.finish();
    assert_eq!(code, 0, "{text}");
    assert_eq!(registers(&w)[0].1, Value::Null, "unit 1 zeroized");
    // --force-with-keys: clear-current of unit 2 done.
    select(&w, &["2"]);
    w.ok(&[
        "--secrets",
        &s,
        "cryptounit-mk-clrcur",
        "--force-with-keys",
        &instance,
        "--yes",
    ]);
    select(&w, &["1", "2", "3", "4"]);
    assert_eq!(registers(&w)[1].1, Value::Null, "unit 2 cleared");

    // Unit 1 cannot unwrap anything now; the recovery unit still can.
    {
        let (client, inst) = library(&w);
        let store = SqliteKeyStore::open(&tke_client::kms::store_path(
            &w.path().join("local").join("keys"),
            &inst,
        ))
        .unwrap();
        let calls = ClientUnits::new(client, inst);
        let one = calls
            .units()
            .unwrap()
            .into_iter()
            .find(unit_num(1))
            .unwrap();
        let record = store.get(&keys[0].root).unwrap();
        let file = WrappedDataKey::parse(&keys[0].wrapped).unwrap();
        assert!(calls
            .unwrap_data(&one, &record.vp, &record.wrapped, &file.wrapped)
            .is_err());
    }
    assert_readable_by(&w, &keys, 1, unit_num(3));

    // Killed at each step of auto-recover into unit 1 (re-imprinted) and unit 2 (its
    // current register cleared): every record readable while stopped, the rerun finishes.
    select(&w, &["1"]);
    reimprint(&w, &s);
    for point in [
        "after-importers",
        "after-export",
        "after-import",
        "after-commit",
        "after-setimm",
    ] {
        let point = format!("auto-recover:{point}");
        w.crash(&point, &["--secrets", &s, "auto-recover", "--yes"]);
        assert_readable_by(&w, &keys, 1, |_| true);
        assert_listed(&w, keys.len(), &point);
        // The journal says where it stopped; the resumed run says so and removes it.
        let step = if point.ends_with("after-importers") {
            "importers-generated"
        } else {
            "key-exported"
        };
        let journal = w.journal("auto-recover").expect("a journal");
        assert!(
            journal.contains(&format!("\"step\": \"{step}\"")),
            "{point}: {journal}"
        );
        let out = w.ok(&["--secrets", &s, "auto-recover", "--resume", "--yes"]);
        assert!(
            out.contains(&format!(
                "auto-recover of service instance {instance} was interrupted after step {step} at "
            )),
            "{point}:\n{out}"
        );
        assert!(
            !out.contains("No interrupted recovery was found"),
            "{point}:\n{out}"
        );
        assert_eq!(
            w.journal("auto-recover"),
            None,
            "{point}: the journal is left"
        );
        select(&w, &["1", "2", "3", "4"]);
        assert_eq!(one_current_value(&w), vp, "{point}");
        assert_every_key_unwraps(&w, &keys, &vp);
        // Unit 1 alone, asked directly, unwraps every data key.
        assert_readable_by(&w, &keys, 1, unit_num(1));
        assert_readable_by(&w, &keys, 1, unit_num(2));
        // Take unit 1's key away again for the next point.
        select(&w, &["1"]);
        w.ok(&[
            "--secrets",
            &s,
            "cryptounit-zeroize",
            "--force-with-keys",
            &instance,
            "--yes",
        ]);
        reimprint(&w, &s);
    }
}

/// A `tke-unitd` in `root` with 2 operational and 2 recovery units, started, and a
/// workstation targeting it, initialized by `auto-init` with alice and bob, thresholds
/// 2/2; the secrets file's path.
fn server_fleet(root: &std::path::Path) -> (tke_test_support::Server, Workstation, String) {
    let mut server =
        tke_test_support::Server::init(root, "srv", &["--operational", "2", "--recovery", "2"]);
    server.start();
    let w = tke();
    w.add_target(&server, &server);
    w.file_keys(&PW[..2]);
    let s = w.secrets(PW).to_str().unwrap().to_owned();
    w.auto_init(&s, (2, 2), &["alice", "bob"]);
    (server, w, s)
}

#[test]
fn a_unit_server_killed_during_a_rotation_is_restarted_and_resume_finishes() {
    let root = tempfile::tempdir().unwrap();
    let (mut server, w, s) = server_fleet(root.path());
    // Root keys in the server's key storage, a data key wrapped under each of a few.
    let made = json(&w, &["kms", "create", "--name", "r", "--count", "20"]);
    let ids: Vec<&str> = made
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    let file = |name: String| w.path().join(name).to_str().unwrap().to_owned();
    for (i, id) in ids.iter().enumerate().take(4) {
        fs::write(file(format!("d{i}")), format!("remote data key {i:016}")).unwrap();
        w.ok(&[
            "kms",
            "wrap",
            "--key",
            id,
            "--in",
            &file(format!("d{i}")),
            "--out",
            &file(format!("w{i}")),
        ]);
    }
    let unwrap_all = |round: &str| {
        for (i, id) in ids.iter().enumerate().take(4) {
            let out = file(format!("u{i}-{round}"));
            w.ok(&[
                "kms",
                "unwrap",
                "--key",
                id,
                "--in",
                &file(format!("w{i}")),
                "--out",
                &out,
            ]);
            assert_eq!(
                fs::read(&out).unwrap(),
                fs::read(file(format!("d{i}"))).unwrap()
            );
        }
    };
    let args = ["--secrets", s.as_str(), "auto-mk-rotate", "--yes"];
    let resume = [&args[..], &["--resume"]].concat();
    for step in ["during-transfer", "after-begin", "during-setimm"] {
        let point = format!("auto-mk-rotate:{step}");
        let old = one_current_value(&w);
        w.crash(&point, &args);
        // The server killed too, with no chance to finish anything: while it is down,
        // --resume says it cannot reach the units and changes nothing.
        server.kill();
        let before = w.snapshot();
        let err = w.fails(&resume, 1);
        assert!(err.contains("127.0.0.1"), "{point}: {err}");
        assert_eq!(before, w.snapshot(), "{point}");
        server.start();
        if step == "after-begin" {
            // The rotation record survived the kill: create waits, list works.
            let err = w.fails(&["kms", "create", "--name", "late"], 1);
            assert!(err.contains("rotation in progress"), "{point}: {err}");
            assert_listed(&w, ids.len(), &point);
        }
        let out = w.ok(&resume);
        assert!(
            out.contains("Master key rotation successful."),
            "{point}:\n{out}"
        );
        let new = one_current_value(&w);
        assert_ne!(new, old, "{point}");
        let list = json(&w, &["kms", "list"]);
        assert!(list
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["vp"].as_str().unwrap().eq_ignore_ascii_case(&new)));
        unwrap_all(step);
    }
    server.stop();
}

/// The units and key storage of `server`'s one instance through the library, over HTTPS
/// with the server's own API key.
fn server_library(server: &tke_test_support::Server) -> (Client, InstanceId) {
    use tke_test_support::server::{ca_of, transport};
    let ca = ca_of(std::path::Path::new(&server.path("")));
    let t = transport(
        &server.url(),
        &ca,
        std::path::Path::new(&server.path("api-key")),
    );
    let client = Client::connect(vec![(Arc::new(t) as Arc<dyn Transport>, ca)]).unwrap();
    let instance = client.instances()[0].clone();
    (client, instance)
}

#[test]
fn tke_unitd_killed_while_auto_mk_rotate_re_encrypts_fails_naming_it_and_resume_finishes() {
    use std::io::{BufRead as _, BufReader};
    let root = tempfile::tempdir().unwrap();
    let (mut server, w, s) = server_fleet(root.path());
    // Two re-encryption calls' worth of root keys, and data keys wrapped under a few more.
    let batch = u32::try_from(tke_ceremony::rotate::REENCRYPT_BATCH).unwrap();
    json(
        &w,
        &[
            "kms",
            "create",
            "--name",
            "bulk",
            "--count",
            &(2 * batch).to_string(),
        ],
    );
    let keys = keys_with_data_in(
        &w,
        || {
            let (client, instance) = server_library(&server);
            client.key_service(&instance).unwrap().unwrap()
        },
        40,
        2,
    );
    let total = 2 * batch as usize + keys.len();
    let old = one_current_value(&w);

    // Units as slow as a real HSM's round trip, so that re-encryption takes seconds;
    // tke-unitd SIGKILLed while `tke` waits for a re-encryption call.
    server.stop();
    server.start_with(&["--latency-ms", "400"]);
    let args = ["--secrets", s.as_str(), "auto-mk-rotate", "--yes"];
    let mut child = w
        .tke()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut before_kill = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        before_kill.push_str(&line);
        before_kill.push('\n');
        if line.starts_with("Re-encrypting key storage: 0 of ") {
            break;
        }
    }
    assert!(
        before_kill.contains(&format!("Re-encrypting key storage: 0 of {total} keys")),
        "{before_kill}"
    );
    // The first call is on its way (each takes over a second at this latency).
    std::thread::sleep(std::time::Duration::from_millis(300));
    server.kill();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    // The transport's own words for the broken connection depend on the moment it broke
    // (waiting for the answer, almost always).
    let cut = "connection failure while ";
    let at = stderr.find(cut).unwrap_or_else(|| panic!("{stderr}")) + cut.len();
    let end = at + stderr[at..].find('\n').unwrap();
    let stderr = format!("{}[CAUSE]{}", &stderr[..at], &stderr[end..]);
    common::snap::assert_snapshot(
        "rotate_unit_server_killed",
        &common::snap::redact_paths(&stderr, &[(w.path(), "[WS]")]),
    );
    let journal = w.journal("auto-mk-rotate").expect("a journal");
    assert!(
        journal.contains("\"step\": \"reencryption-begun\""),
        "{journal}"
    );

    // Nothing lost: back up, every record is under the old key or the new one, each
    // readable by a unit under the VP it is tagged with; create waits, list works.
    server.start();
    let stores = std::path::PathBuf::from(server.path("keys"));
    readable_by(server_library(&server), &stores, &keys, 1, |_| true);
    let (client, instance) = server_library(&server);
    let summary = client
        .key_service(&instance)
        .unwrap()
        .unwrap()
        .summary()
        .unwrap();
    assert_eq!(summary.total as usize, total);
    let rotation = summary.rotation.expect("the rotation marker survived");
    assert!(rotation.from.to_hex().eq_ignore_ascii_case(&old));
    assert!(
        summary
            .by_vp
            .iter()
            .all(|(vp, _)| *vp == rotation.from || *vp == rotation.to),
        "every record under the old key or the new one: {:?}",
        summary.by_vp
    );
    let err = w.fails(&["kms", "create", "--name", "late"], 1);
    assert!(err.contains("rotation in progress"), "{err}");
    assert_listed(&w, total, "killed");

    // --resume says where it stopped and finishes; every data key unwraps to the same
    // bytes under the new key; the journal is gone.
    let out = w.ok(&[&args[..], &["--resume"]].concat());
    assert!(
        out.contains(&format!(
            "auto-mk-rotate of service instance {instance} was interrupted after step reencryption-begun at "
        )),
        "{out}"
    );
    assert!(out.contains("Master key rotation successful."), "{out}");
    assert_eq!(w.journal("auto-mk-rotate"), None);
    let new = one_current_value(&w);
    assert_ne!(new, old);
    let (client, instance) = server_library(&server);
    let kms = client.key_service(&instance).unwrap().unwrap();
    for k in &keys {
        assert_eq!(
            &*kms.unwrap(&k.root, &k.wrapped).unwrap(),
            k.plain.as_slice()
        );
    }
    let list = json(&w, &["kms", "list"]);
    assert_eq!(list.as_array().unwrap().len(), total);
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["vp"].as_str().unwrap().eq_ignore_ascii_case(&new)));
    server.stop();
}
