//! A rotation stopped at any point leaves every record tagged with the VP of the master
//! key that wraps it, and resumes with nothing lost: stopped between batches (the store
//! dropped) and killed in the middle of a batch (a child process aborts).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    num::NonZeroUsize,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::Command,
};

use tke_keystore::{KeyName, KeyStore, Record, SqliteKeyStore, WrappedKey};
use tke_proto::{transport, MasterKey};

const RECORDS: usize = 50;
const BATCH: usize = 20;
/// Where the child process finds the store and the two master keys (hex), and which
/// call of its rewrap function aborts the process.
const ENV_STORE: &str = "TKE_KEYSTORE_CRASH_STORE";
const ENV_KEYS: &str = "TKE_KEYSTORE_CRASH_KEYS";
const ENV_ABORT_AT: &str = "TKE_KEYSTORE_CRASH_ABORT_AT";

fn batch() -> NonZeroUsize {
    NonZeroUsize::new(BATCH).unwrap()
}

fn rewrap(
    old: &MasterKey,
    new: &MasterKey,
    w: &WrappedKey,
) -> Result<WrappedKey, tke_keystore::RewrapError> {
    let data = transport::unwrap(old.expose_secret(), w.as_bytes())?;
    Ok(WrappedKey::new(transport::wrap(
        new.expose_secret(),
        &data,
    )?)?)
}

/// A store file of `RECORDS` records under `a`; returns the data key of each.
fn make_store(path: &Path, a: &MasterKey) -> Vec<(Record, [u8; 32])> {
    let mut store = SqliteKeyStore::create(path).unwrap();
    let keys: Vec<_> = (0..RECORDS)
        .map(|i| {
            let data = MasterKey::random();
            let w = WrappedKey::new(transport::wrap(a.expose_secret(), &data).unwrap()).unwrap();
            let r = Record::new(KeyName::new(&format!("k{i}")).unwrap(), w, a.vp());
            (r, *data.expose_secret())
        })
        .collect();
    let records: Vec<Record> = keys.iter().map(|(r, _)| r.clone()).collect();
    store.insert_all(&records).unwrap();
    keys
}

/// Reopens the store and checks each record is under exactly one of the two VPs and
/// unwraps, with that VP's key, to its data key. Returns how many are under `b`.
fn check_reopened(path: &Path, keys: &[(Record, [u8; 32])], a: &MasterKey, b: &MasterKey) -> u64 {
    let store = SqliteKeyStore::open(path).unwrap();
    for (original, data) in keys {
        let got = store.get(&original.id).unwrap();
        let mk = if got.vp == a.vp() {
            a
        } else {
            assert_eq!(got.vp, b.vp(), "record {} has an unknown VP", got.id);
            b
        };
        let opened = transport::unwrap(mk.expose_secret(), got.wrapped.as_bytes()).unwrap();
        assert_eq!(opened.expose_secret(), data, "record {}", got.id);
    }
    let (in_a, in_b) = (
        store.count_by_vp(&a.vp()).unwrap(),
        store.count_by_vp(&b.vp()).unwrap(),
    );
    assert_eq!(in_a + in_b, RECORDS as u64);
    assert_eq!(store.count().unwrap(), RECORDS as u64);
    in_b
}

fn finish(path: &Path, a: &MasterKey, b: &MasterKey) {
    let mut store = SqliteKeyStore::open(path).unwrap();
    while store
        .rewrap_batch(&a.vp(), &b.vp(), batch(), &mut |_, w| rewrap(a, b, w))
        .unwrap()
        > 0
    {}
    store.sync().unwrap();
}

#[test]
fn a_rotation_stopped_between_batches_resumes_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("instance.keys");
    let (a, b) = (MasterKey::random(), MasterKey::random());
    let keys = make_store(&path, &a);
    {
        let mut store = SqliteKeyStore::open(&path).unwrap();
        for _ in 0..2 {
            store
                .rewrap_batch(&a.vp(), &b.vp(), batch(), &mut |_, w| rewrap(&a, &b, w))
                .unwrap();
        }
        // Dropped here without finishing, as a stopped rotation would be.
    }
    assert_eq!(check_reopened(&path, &keys, &a, &b), 2 * BATCH as u64);
    finish(&path, &a, &b);
    assert_eq!(check_reopened(&path, &keys, &a, &b), RECORDS as u64);
}

#[test]
fn a_process_killed_in_the_middle_of_a_batch_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("instance.keys");
    let (a, b) = (MasterKey::random(), MasterKey::random());
    let keys = make_store(&path, &a);
    // The child finishes one batch, then aborts on the 7th record of the second.
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "rotation_child", "--ignored", "--test-threads=1"])
        .env(ENV_STORE, &path)
        .env(
            ENV_KEYS,
            format!(
                "{} {}",
                hex::encode(a.expose_secret()),
                hex::encode(b.expose_secret())
            ),
        )
        .env(ENV_ABORT_AT, (BATCH + 7).to_string())
        .output()
        .unwrap();
    assert_eq!(
        status.status.signal(),
        Some(6),
        "the child must have died of SIGABRT: {status:?}"
    );
    assert_eq!(
        check_reopened(&path, &keys, &a, &b),
        BATCH as u64,
        "the first batch committed, the aborted one left no trace"
    );
    finish(&path, &a, &b);
    assert_eq!(check_reopened(&path, &keys, &a, &b), RECORDS as u64);
}

/// The rotation that `a_process_killed_in_the_middle_of_a_batch_loses_nothing` runs in a
/// child process and kills with `abort` in the middle of a batch.
#[test]
#[ignore = "run as a child process by a_process_killed_in_the_middle_of_a_batch_loses_nothing"]
fn rotation_child() {
    let path = PathBuf::from(std::env::var_os(ENV_STORE).unwrap());
    let hexkeys = std::env::var(ENV_KEYS).unwrap();
    let (a, b) = hexkeys.split_once(' ').unwrap();
    let a = MasterKey::from_slice(&hex::decode(a).unwrap()).unwrap();
    let b = MasterKey::from_slice(&hex::decode(b).unwrap()).unwrap();
    let abort_at: usize = std::env::var(ENV_ABORT_AT).unwrap().parse().unwrap();
    let mut store = SqliteKeyStore::open(&path).unwrap();
    let mut calls = 0;
    // Ends normally only if the abort point is never reached, which the parent refuses.
    while store
        .rewrap_batch(&a.vp(), &b.vp(), batch(), &mut |_, w| {
            calls += 1;
            if calls == abort_at {
                std::process::abort();
            }
            rewrap(&a, &b, w)
        })
        .unwrap()
        > 0
    {}
}
