//! The key store's contract, on the SQLite store in memory and in a file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{num::NonZeroUsize, os::unix::fs::PermissionsExt, path::Path};

use tke_keystore::{
    Created, KeyDataError, KeyId, KeyName, KeyStore, ListCursor, ReadBatch, Record, RewrapError,
    RotationMarker, SqliteKeyStore, StoreError, WrappedKey,
};
use tke_proto::{transport, MasterKey, Vp};

/// Runs each contract test on every store: SQLite in memory and in a file. A shared
/// database store joins here.
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn in_memory() {
                super::$name(&mut tke_keystore::SqliteKeyStore::in_memory().unwrap());
            }

            #[test]
            fn in_a_file() {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("instance.keys");
                super::$name(&mut tke_keystore::SqliteKeyStore::create(&path).unwrap());
            }
        }
    )*};
}

on_every_store!(
    records_round_trip_and_list_in_creation_order,
    delete_removes_one_record_and_a_missing_id_is_named,
    a_duplicate_id_is_refused_and_changes_nothing,
    rewrap_moves_every_record_from_a_to_b_in_batches,
    a_failing_rewrap_leaves_its_whole_batch_untouched,
    rewrap_to_the_same_vp_is_refused_and_an_unknown_vp_has_nothing_to_move,
    a_whole_batch_rewrap_is_one_call_and_all_or_nothing,
    the_rotation_marker_is_one_at_a_time_and_ends_only_when_no_record_is_left,
    batches_read_ahead_then_committed_move_each_record_once,
);

fn n(v: usize) -> NonZeroUsize {
    NonZeroUsize::new(v).unwrap()
}

/// A data key sealed under a master key, as a unit would store it.
fn seal(mk: &MasterKey, data: &MasterKey) -> WrappedKey {
    WrappedKey::new(transport::wrap(mk.expose_secret(), data).unwrap()).unwrap()
}

/// The data key a record holds, unwrapped with the master key of its VP.
fn open_with(mk: &MasterKey, record: &Record) -> [u8; 32] {
    assert_eq!(
        record.vp,
        mk.vp(),
        "record {} is tagged with another VP",
        record.id
    );
    *transport::unwrap(mk.expose_secret(), record.wrapped.as_bytes())
        .unwrap()
        .expose_secret()
}

/// What a unit does for one record in a rotation: unwrap under `old`, wrap under `new`.
fn rewrap_fn<'a>(
    old: &'a MasterKey,
    new: &'a MasterKey,
) -> impl FnMut(&KeyId, &WrappedKey) -> Result<WrappedKey, RewrapError> + 'a {
    move |_, wrapped| {
        let data = transport::unwrap(old.expose_secret(), wrapped.as_bytes())?;
        Ok(WrappedKey::new(transport::wrap(
            new.expose_secret(),
            &data,
        )?)?)
    }
}

/// `count` records under `mk`, named `key-0`…, created one millisecond apart; returns the
/// records and their data keys.
fn fill(store: &mut dyn KeyStore, mk: &MasterKey, count: usize) -> Vec<(Record, [u8; 32])> {
    let out: Vec<_> = (0..count)
        .map(|i| {
            let data = MasterKey::random();
            let mut r = Record::new(
                KeyName::new(&format!("key-{i}")).unwrap(),
                seal(mk, &data),
                mk.vp(),
            );
            r.created = Created::from_unix_millis(1_700_000_000_000 + i as i64);
            (r, *data.expose_secret())
        })
        .collect();
    let records: Vec<Record> = out.iter().map(|(r, _)| r.clone()).collect();
    store.insert_all(&records).unwrap();
    out
}

/// Every record is readable with the master key of the VP it is tagged with, holds its
/// original data key, and the counts by VP add up to the total.
fn assert_all_readable(store: &dyn KeyStore, keys: &[(Record, [u8; 32])], mks: &[&MasterKey]) {
    for (original, data) in keys {
        let got = store.get(&original.id).unwrap();
        let mk = mks
            .iter()
            .find(|mk| mk.vp() == got.vp)
            .unwrap_or_else(|| panic!("record {} is tagged with an unknown VP", got.id));
        assert_eq!(&open_with(mk, &got), data, "record {}", got.id);
        assert_eq!((&got.name, got.created), (&original.name, original.created));
    }
    let by_vp: u64 = store.vp_counts().unwrap().iter().map(|(_, c)| c).sum();
    assert_eq!(by_vp, store.count().unwrap());
    assert_eq!(store.count().unwrap(), keys.len() as u64);
}

fn counts(store: &dyn KeyStore, a: &Vp, b: &Vp) -> (u64, u64) {
    (store.count_by_vp(a).unwrap(), store.count_by_vp(b).unwrap())
}

fn records_round_trip_and_list_in_creation_order(store: &mut dyn KeyStore) {
    let mk = MasterKey::random();
    let mut keys = fill(store, &mk, 7);
    // Two records created in the same millisecond: the id breaks the tie.
    let mut tie = Record::new(KeyName::new("tie").unwrap(), seal(&mk, &mk), mk.vp());
    tie.created = keys[3].0.created;
    store.insert(&tie).unwrap();
    keys.push((tie.clone(), *mk.expose_secret()));

    for (r, _) in &keys {
        assert_eq!(&store.get(&r.id).unwrap(), r);
    }
    let mut expected: Vec<Record> = keys.iter().map(|(r, _)| r.clone()).collect();
    expected.sort_by_key(|r| (r.created, r.id));

    let mut listed = Vec::new();
    let mut cursor: Option<ListCursor> = None;
    loop {
        let page = store.list(cursor.as_ref(), n(3)).unwrap();
        let Some(last) = page.last() else { break };
        assert!(page.len() <= 3);
        cursor = Some(ListCursor::after(last));
        listed.extend(page);
    }
    assert_eq!(listed, expected);
    assert_eq!(store.count().unwrap(), 8);
    assert_eq!(store.vp_counts().unwrap(), vec![(mk.vp(), 8)]);
}

fn delete_removes_one_record_and_a_missing_id_is_named(store: &mut dyn KeyStore) {
    let mk = MasterKey::random();
    let keys = fill(store, &mk, 3);
    let gone = keys[1].0.id;
    store.delete(&gone).unwrap();
    assert_eq!(store.count().unwrap(), 2);
    assert!(store.get(&keys[0].0.id).is_ok() && store.get(&keys[2].0.id).is_ok());

    for err in [
        store.delete(&gone).unwrap_err(),
        store.get(&gone).unwrap_err(),
    ] {
        assert!(
            matches!(&err, StoreError::NotFound { id, .. } if *id == gone),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "key store {} holds no key with id {gone}",
                store.location().display()
            )
        );
    }
    assert_eq!(store.count().unwrap(), 2);
}

fn a_duplicate_id_is_refused_and_changes_nothing(store: &mut dyn KeyStore) {
    let mk = MasterKey::random();
    let keys = fill(store, &mk, 2);
    let mut dup = Record::new(KeyName::new("other").unwrap(), seal(&mk, &mk), mk.vp());
    dup.id = keys[0].0.id;
    let err = store.insert(&dup).unwrap_err();
    assert!(
        matches!(&err, StoreError::DuplicateId { id, .. } if *id == dup.id),
        "{err:?}"
    );
    assert_eq!(store.get(&dup.id).unwrap(), keys[0].0);

    // A batch with a duplicate stores none of its records.
    let fresh = Record::new(KeyName::new("fresh").unwrap(), seal(&mk, &mk), mk.vp());
    let twice = Record::new(KeyName::new("twice").unwrap(), seal(&mk, &mk), mk.vp());
    let err = store
        .insert_all(&[fresh.clone(), twice.clone(), twice.clone()])
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::DuplicateId { id, .. } if *id == twice.id),
        "{err:?}"
    );
    assert_eq!(store.count().unwrap(), 2);
    assert!(matches!(
        store.get(&fresh.id),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn key_names_ids_and_wrapped_values_are_checked() {
    for good in ["a", "Key-1", "k.v_2-x", &"x".repeat(KeyName::MAX_LEN)] {
        assert_eq!(KeyName::new(good).unwrap().as_str(), good);
    }
    assert_eq!(KeyName::new(""), Err(KeyDataError::NameEmpty));
    assert_eq!(
        KeyName::new(&"x".repeat(91)),
        Err(KeyDataError::NameTooLong {
            length: 91,
            max: 90
        })
    );
    for (bad, character, position) in [
        ("-lead", '-', 1),
        ("has space", ' ', 4),
        ("naïve", 'ï', 3),
        ("a/b", '/', 2),
        ("tab\t", '\t', 4),
    ] {
        assert_eq!(
            KeyName::new(bad),
            Err(KeyDataError::NameCharacter {
                character,
                position
            }),
            "{bad:?}"
        );
    }

    let id = KeyId::random();
    let shown = id.to_string();
    assert_eq!(shown.len(), 36);
    assert_eq!(&shown[14..15], "4", "a version-4 UUID");
    assert_eq!(KeyId::parse(&shown).unwrap(), id);
    assert_eq!(KeyId::parse(&shown.replace('-', "")).unwrap(), id);
    assert_eq!(KeyId::parse(&shown.to_uppercase()).unwrap(), id);
    for bad in ["", "xyz", &shown[..35], &format!("{shown}0"), "0123-4567"] {
        assert!(
            matches!(KeyId::parse(bad), Err(KeyDataError::IdSyntax { .. })),
            "{bad:?}"
        );
    }
    assert_eq!(
        KeyId::from_slice(&[0; 15]),
        Err(KeyDataError::IdLength { actual: 15 })
    );

    assert_eq!(
        WrappedKey::new(Vec::new()),
        Err(KeyDataError::WrappedLength {
            actual: 0,
            max: WrappedKey::MAX_LEN
        })
    );
    assert!(WrappedKey::new(vec![1; WrappedKey::MAX_LEN + 1]).is_err());
    assert_eq!(WrappedKey::new(vec![1; 40]).unwrap().len(), 40);
}

#[test]
fn debug_output_never_shows_wrapped_material() {
    let mk = MasterKey::random();
    let record = Record::new(
        KeyName::new("k").unwrap(),
        seal(&mk, &MasterKey::random()),
        mk.vp(),
    );
    let hex = hex::encode(record.wrapped.as_bytes());
    let debug = format!("{record:?} {:?} {:#?}", record.wrapped, record);
    assert!(debug.contains("WrappedKey(40 bytes)"), "{debug}");
    assert!(!debug.contains(&hex[..16]), "{debug}");
    assert!(!debug.contains(&format!("{:?}", &record.wrapped.as_bytes()[..4])));
}

fn rewrap_moves_every_record_from_a_to_b_in_batches(store: &mut dyn KeyStore) {
    let (a, b) = (MasterKey::random(), MasterKey::random());
    let keys = fill(store, &a, 25);
    let mut f = rewrap_fn(&a, &b);
    let mut moved = Vec::new();
    loop {
        let m = store.rewrap_batch(&a.vp(), &b.vp(), n(10), &mut f).unwrap();
        moved.push(m);
        let (in_a, in_b) = counts(&*store, &a.vp(), &b.vp());
        assert_eq!(in_a + in_b, 25, "counts by VP add up after every batch");
        assert_eq!(in_b, moved.iter().sum::<usize>() as u64);
        assert_all_readable(&*store, &keys, &[&a, &b]);
        if m == 0 {
            break;
        }
    }
    assert_eq!(moved, [10, 10, 5, 0]);
    assert_eq!(store.vp_counts().unwrap(), vec![(b.vp(), 25)]);
    assert_all_readable(&*store, &keys, &[&b]);
}

fn a_failing_rewrap_leaves_its_whole_batch_untouched(store: &mut dyn KeyStore) {
    let (a, b) = (MasterKey::random(), MasterKey::random());
    let keys = fill(store, &a, 12);
    store
        .rewrap_batch(&a.vp(), &b.vp(), n(5), &mut rewrap_fn(&a, &b))
        .unwrap();
    let before: Vec<Record> = keys
        .iter()
        .map(|(r, _)| store.get(&r.id).unwrap())
        .collect();

    // The unit fails on the fourth record of the next batch.
    let mut good = rewrap_fn(&a, &b);
    let mut calls = 0;
    let mut failed_on = None;
    let err = store
        .rewrap_batch(&a.vp(), &b.vp(), n(5), &mut |id, w| {
            calls += 1;
            if calls == 4 {
                failed_on = Some(*id);
                return Err("unit 3 did not answer".into());
            }
            good(id, w)
        })
        .unwrap_err();
    let failed_on = failed_on.unwrap();
    assert!(
        matches!(&err, StoreError::Rewrap { id, source, .. }
            if *id == failed_on && source.to_string() == "unit 3 did not answer"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "key store {}: rewrapping key {failed_on} failed; its batch was left unchanged",
            store.location().display()
        )
    );
    let after: Vec<Record> = keys
        .iter()
        .map(|(r, _)| store.get(&r.id).unwrap())
        .collect();
    assert_eq!(after, before, "nothing of the failed batch changed");
    assert_eq!(counts(&*store, &a.vp(), &b.vp()), (7, 5));

    // The rotation resumes and finishes.
    while store
        .rewrap_batch(&a.vp(), &b.vp(), n(5), &mut rewrap_fn(&a, &b))
        .unwrap()
        > 0
    {}
    assert_eq!(counts(&*store, &a.vp(), &b.vp()), (0, 12));
    assert_all_readable(&*store, &keys, &[&b]);
}

fn rewrap_to_the_same_vp_is_refused_and_an_unknown_vp_has_nothing_to_move(
    store: &mut dyn KeyStore,
) {
    let (a, b) = (MasterKey::random(), MasterKey::random());
    let keys = fill(store, &a, 2);
    let mut never = |_: &KeyId, _: &WrappedKey| -> Result<WrappedKey, RewrapError> {
        panic!("no record should be rewrapped")
    };
    let err = store
        .rewrap_batch(&a.vp(), &a.vp(), n(10), &mut never)
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::SameVp { vp, .. } if *vp == a.vp()),
        "{err:?}"
    );
    assert_eq!(
        store
            .rewrap_batch(&b.vp(), &a.vp(), n(10), &mut never)
            .unwrap(),
        0
    );
    assert_all_readable(&*store, &keys, &[&a]);
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_file_store_is_private_never_replaced_and_checked_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("instance.keys");
    let mk = MasterKey::random();
    let keys = {
        let mut store = SqliteKeyStore::create(&path).unwrap();
        let keys = fill(&mut store, &mk, 3);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("instance.keys-wal")), 0o600);
        keys
    };
    let err = SqliteKeyStore::create(&path).unwrap_err();
    assert!(
        matches!(&err, StoreError::Create { source, .. }
        if source.kind() == std::io::ErrorKind::AlreadyExists),
        "{err:?}"
    );
    let store = SqliteKeyStore::open(&path).unwrap();
    assert_all_readable(&store, &keys, &[&mk]);
    drop(store);

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = SqliteKeyStore::open(&path).unwrap_err();
    assert!(
        matches!(err, StoreError::Permissions { mode: 0o640, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("has mode 0640"), "{err}");

    let missing = dir.path().join("missing.keys");
    let err = SqliteKeyStore::open(&missing).unwrap_err();
    assert!(
        matches!(&err, StoreError::Open { path, .. } if *path == missing),
        "{err:?}"
    );
    assert!(!missing.exists(), "opening never creates a store");

    // A text file, an empty file, and an SQLite database of something else.
    let text = dir.path().join("text");
    tke_fs::create_private(
        &text,
        b"not a database, but long enough to have a header here",
    )
    .unwrap();
    let empty = dir.path().join("empty");
    tke_fs::create_private(&empty, b"").unwrap();
    let other = dir.path().join("other.db");
    tke_fs::create_private(&other, b"").unwrap();
    rusqlite_other_db(&other);
    for p in [&text, &empty, &other] {
        let err = SqliteKeyStore::open(p).unwrap_err();
        assert!(
            matches!(&err, StoreError::NotAStore { path } if path == p),
            "{p:?}: {err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("{} is not a TKE key store", p.display())
        );
    }
}

/// An SQLite file with a table but not the key store's header.
fn rusqlite_other_db(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
}

#[test]
fn another_format_version_and_malformed_rows_are_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("instance.keys");
    let mk = MasterKey::random();
    let keys = {
        let mut store = SqliteKeyStore::create(&path).unwrap();
        fill(&mut store, &mk, 2)
    };
    let raw = rusqlite::Connection::open(&path).unwrap();
    let journal: String = raw
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");

    // A row changed by other means: its name breaks the rules.
    raw.execute(
        "UPDATE keys SET name = 'bad name' WHERE id = ?1",
        [keys[1].0.id.as_bytes().as_slice()],
    )
    .unwrap();
    let store = SqliteKeyStore::open(&path).unwrap();
    let err = store.get(&keys[1].0.id).unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Malformed {
                table: "keys",
                source: KeyDataError::NameCharacter { character: ' ', .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("key store {}: row ", path.display()))
            && err.to_string().ends_with(" of table keys is malformed"),
        "{err}"
    );
    assert!(matches!(
        store.list(None, n(10)),
        Err(StoreError::Malformed { .. })
    ));
    assert_eq!(store.get(&keys[0].0.id).unwrap(), keys[0].0);
    drop(store);

    raw.pragma_update(None, "user_version", 3).unwrap();
    let err = SqliteKeyStore::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Version {
                found: 3,
                expected: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "the key store {} has format version 3; this program reads version 2",
            path.display()
        )
    );
}

fn a_whole_batch_rewrap_is_one_call_and_all_or_nothing(store: &mut dyn KeyStore) {
    let (a, b) = (MasterKey::random(), MasterKey::random());
    let keys = fill(store, &a, 12);
    let mut one = rewrap_fn(&a, &b);
    let mut calls = Vec::new();
    let mut whole = |batch: &[WrappedKey]| -> Result<Vec<WrappedKey>, RewrapError> {
        calls.push(batch.len());
        batch.iter().map(|w| one(&KeyId::random(), w)).collect()
    };
    assert_eq!(
        store
            .rewrap_batch_whole(&a.vp(), &b.vp(), n(5), &mut whole)
            .unwrap(),
        5
    );
    let before: Vec<Record> = keys
        .iter()
        .map(|(r, _)| store.get(&r.id).unwrap())
        .collect();

    // A failing unit, and one that answers with a value missing: nothing changes.
    let err = store
        .rewrap_batch_whole(&a.vp(), &b.vp(), n(5), &mut |_| {
            Err("unit 2 did not answer".into())
        })
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::RewrapBatch { count: 5, source, .. }
            if source.to_string() == "unit 2 did not answer"),
        "{err:?}"
    );
    assert!(err.to_string().contains("a batch of 5 keys"), "{err}");
    let mut short = rewrap_fn(&a, &b);
    let err = store
        .rewrap_batch_whole(&a.vp(), &b.vp(), n(5), &mut |batch| {
            batch[1..]
                .iter()
                .map(|w| short(&KeyId::random(), w))
                .collect()
        })
        .unwrap_err();
    assert_one_value_missing(&err);
    let after: Vec<Record> = keys
        .iter()
        .map(|(r, _)| store.get(&r.id).unwrap())
        .collect();
    assert_eq!(after, before, "nothing of the failed batches changed");

    while store
        .rewrap_batch_whole(&a.vp(), &b.vp(), n(5), &mut whole)
        .unwrap()
        > 0
    {}
    assert_eq!(calls, [5, 5, 2], "one call per batch");
    assert_all_readable(&*store, &keys, &[&b]);
}

fn the_rotation_marker_is_one_at_a_time_and_ends_only_when_no_record_is_left(
    store: &mut dyn KeyStore,
) {
    let (a, b, c) = (
        MasterKey::random(),
        MasterKey::random(),
        MasterKey::random(),
    );
    let keys = fill(store, &a, 3);
    let ab = RotationMarker {
        from: a.vp(),
        to: b.vp(),
    };
    assert_eq!(store.rotation().unwrap(), None);
    let err = store.finish_rotation(&ab).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NotThisRotation {
                in_progress: None,
                ..
            }
        ),
        "{err:?}"
    );
    let same = RotationMarker {
        from: a.vp(),
        to: a.vp(),
    };
    assert!(matches!(
        store.begin_rotation(&same),
        Err(StoreError::SameVp { .. })
    ));
    store.begin_rotation(&ab).unwrap();
    store.begin_rotation(&ab).unwrap();
    assert_eq!(store.rotation().unwrap(), Some(ab));
    let bc = RotationMarker {
        from: b.vp(),
        to: c.vp(),
    };
    let err = store.begin_rotation(&bc).unwrap_err();
    assert_eq!(err.rotation_in_progress(), Some(&ab));
    assert!(
        err.to_string().contains("is in progress; finish it first"),
        "{err}"
    );

    let err = store.finish_rotation(&ab).unwrap_err();
    assert!(
        matches!(err, StoreError::RecordsLeft { count: 3, vp, .. } if vp == a.vp()),
        "{err:?}"
    );
    assert_eq!(store.rotation().unwrap(), Some(ab), "the marker stays");
    while store
        .rewrap_batch(&a.vp(), &b.vp(), n(2), &mut rewrap_fn(&a, &b))
        .unwrap()
        > 0
    {}
    store.finish_rotation(&ab).unwrap();
    assert_eq!(store.rotation().unwrap(), None);
    assert_all_readable(&*store, &keys, &[&b]);
}

#[test]
fn a_format_1_store_is_upgraded_and_keeps_its_records_and_marker() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("instance.keys");
    let (a, b) = (MasterKey::random(), MasterKey::random());
    let keys = {
        let mut store = SqliteKeyStore::create(&path).unwrap();
        fill(&mut store, &a, 2)
    };
    // Format 1: no rotation table.
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch("DROP TABLE rotation; PRAGMA user_version = 1;")
        .unwrap();
    drop(raw);
    let mut store = SqliteKeyStore::open(&path).unwrap();
    assert_eq!(store.rotation().unwrap(), None);
    let ab = RotationMarker {
        from: a.vp(),
        to: b.vp(),
    };
    store.begin_rotation(&ab).unwrap();
    drop(store);
    let store = SqliteKeyStore::open(&path).unwrap();
    assert_eq!(store.rotation().unwrap(), Some(ab), "the marker is durable");
    assert_all_readable(&store, &keys, &[&a]);
}

/// The values of `batch` rewrapped from `old` to `new`, as a unit would return them.
fn rewrapped(batch: &ReadBatch, old: &MasterKey, new: &MasterKey) -> Vec<WrappedKey> {
    let mut one = rewrap_fn(old, new);
    batch
        .ids()
        .iter()
        .zip(batch.wrapped())
        .map(|(id, w)| one(id, w).unwrap())
        .collect()
}

fn batches_read_ahead_then_committed_move_each_record_once(store: &mut dyn KeyStore) {
    let (a, b) = (MasterKey::random(), MasterKey::random());
    let keys = fill(store, &a, 12);
    // Three batches read one after the other before any is committed: none overlaps.
    let first = store.read_batch(&a.vp(), None, n(5)).unwrap();
    let second = store.read_batch(&a.vp(), first.next(), n(5)).unwrap();
    let third = store.read_batch(&a.vp(), second.next(), n(5)).unwrap();
    assert_eq!((first.len(), second.len(), third.len()), (5, 5, 2));
    let mut ids: Vec<KeyId> = [&first, &second, &third]
        .iter()
        .flat_map(|b| b.ids().to_vec())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12, "every record read once");
    assert!(store
        .read_batch(&a.vp(), third.next(), n(5))
        .unwrap()
        .is_empty());

    // A short answer and the same VP on both sides are refused, and change nothing.
    let new_second = rewrapped(&second, &a, &b);
    let err = store
        .commit_batch(&a.vp(), &b.vp(), &second, &new_second[1..])
        .unwrap_err();
    assert_one_value_missing(&err);
    let err = store
        .commit_batch(&a.vp(), &a.vp(), &second, &new_second)
        .unwrap_err();
    assert!(matches!(err, StoreError::SameVp { .. }), "{err:?}");
    assert_eq!(store.count_by_vp(&a.vp()).unwrap(), 12);

    // Committed out of order; a record deleted after it was read is left deleted.
    let gone = second.ids()[0];
    store.delete(&gone).unwrap();
    assert_eq!(
        store
            .commit_batch(&a.vp(), &b.vp(), &second, &new_second)
            .unwrap(),
        4
    );
    assert!(matches!(store.get(&gone), Err(StoreError::NotFound { .. })));
    let new_first = rewrapped(&first, &a, &b);
    assert_eq!(
        store
            .commit_batch(&a.vp(), &b.vp(), &first, &new_first)
            .unwrap(),
        5
    );
    // Committed twice (a retry): the records already moved are left as they are.
    assert_eq!(
        store
            .commit_batch(&a.vp(), &b.vp(), &first, &new_first)
            .unwrap(),
        0
    );
    assert_eq!(
        (
            store.count_by_vp(&a.vp()).unwrap(),
            store.count_by_vp(&b.vp()).unwrap()
        ),
        (2, 9)
    );
    let new_third = rewrapped(&third, &a, &b);
    store
        .commit_batch(&a.vp(), &b.vp(), &third, &new_third)
        .unwrap();
    let left: Vec<_> = keys.into_iter().filter(|(r, _)| r.id != gone).collect();
    let by_vp: u64 = store.vp_counts().unwrap().iter().map(|(_, c)| c).sum();
    assert_eq!(by_vp, 11);
    for (original, data) in &left {
        assert_eq!(&open_with(&b, &store.get(&original.id).unwrap()), data);
    }
}

/// `err` says a batch of 5 came back with 4 values.
fn assert_one_value_missing(err: &StoreError) {
    assert!(
        matches!(
            err,
            StoreError::RewrapCount {
                expected: 5,
                actual: 4,
                ..
            }
        ),
        "{err:?}"
    );
}
