//! Rotation of 1,000,000 keys: the store's `rewrap_batch` against a plain SQLite rewrite
//! of the same rows. Set up once (about 1M inserts), then every iteration moves all rows
//! to the other master key, alternating A → B and B → A.
//!
//! - `sqlite_floor`: SQL only on a second connection: per batch, select the rows still
//!   under the old VP, update each one's wrapped value (the same bytes) and VP. As the
//!   bytes do not change, it moves the rows between the current VP and a shadow VP and
//!   back, ending where it started.
//! - `rewrap_aes`: `rewrap_batch` with a real RFC 5649 unwrap under the old master key
//!   and wrap under the new one (aes-kw, key schedules expanded once per rotation, as a
//!   unit holding both registers would).
//! - `rewrap_copy`: `rewrap_batch` with a rewrap that copies the value: the store's cost
//!   without the crypto.
//!
//! `TKE_KEYSTORE_BENCH_RECORDS` and `TKE_KEYSTORE_BENCH_BATCH` change the sizes; run as a
//! test (`cargo test --all-targets`, no `--bench`), it uses 1,000 records in batches of 100.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod floor;

use std::{
    num::NonZeroUsize,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aes_kw::KekAes256;
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use tke_keystore::{KeyId, KeyName, KeyStore, Record, RewrapError, SqliteKeyStore, WrappedKey};
use tke_proto::MasterKey;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One key's rewrap, given the old and the new master key's expanded key schedules.
type OneRewrap = fn(&WrappedKey, &KekAes256, &KekAes256) -> Result<WrappedKey, RewrapError>;

struct Bench {
    store: SqliteKeyStore,
    path: PathBuf,
    keys: [MasterKey; 2],
    /// Which of `keys` wraps every record now.
    current: usize,
    /// Whether the floor left every record tagged with the shadow VP.
    shadowed: bool,
    batch: NonZeroUsize,
}

impl Bench {
    fn setup(path: &Path, records: usize, batch: usize) -> Self {
        let keys = [MasterKey::random(), MasterKey::random()];
        let mut store = SqliteKeyStore::create(path).unwrap();
        let kek = KekAes256::from(*keys[0].expose_secret());
        let name = KeyName::new("bench-key").unwrap();
        let start = Instant::now();
        let mut done = 0;
        while done < records {
            let chunk: Vec<Record> = (done..records.min(done + 100_000))
                .map(|_| {
                    let data = MasterKey::random();
                    let mut out = vec![0u8; 40];
                    kek.wrap_with_padding(data.expose_secret(), &mut out)
                        .unwrap();
                    Record::new(name.clone(), WrappedKey::new(out).unwrap(), keys[0].vp())
                })
                .collect();
            done += chunk.len();
            store.insert_all(&chunk).unwrap();
        }
        store.sync().unwrap();
        eprintln!("set up {records} records in {:.1?}", start.elapsed());
        Self {
            store,
            path: path.to_owned(),
            keys,
            current: 0,
            shadowed: false,
            batch: NonZeroUsize::new(batch).unwrap(),
        }
    }

    /// Moves every record to the other master key with `rewrap_batch`; returns the time.
    fn rotate(&mut self, rewrap: OneRewrap) -> Duration {
        let (old, new) = (&self.keys[self.current], &self.keys[1 - self.current]);
        let start = Instant::now();
        let old_kek = KekAes256::from(*old.expose_secret());
        let new_kek = KekAes256::from(*new.expose_secret());
        let mut f = |_: &KeyId, w: &WrappedKey| rewrap(w, &old_kek, &new_kek);
        while self
            .store
            .rewrap_batch(&old.vp(), &new.vp(), self.batch, &mut f)
            .unwrap()
            > 0
        {}
        let took = start.elapsed();
        assert_eq!(self.store.count_by_vp(&old.vp()).unwrap(), 0);
        self.current = 1 - self.current;
        took
    }

    /// The same moves as plain SQL on a second connection ([`floor::rewrite`]), with
    /// the same batch size, between the current VP and the shadow VP.
    fn rotate_sql(&mut self, raw: &mut rusqlite::Connection) -> Duration {
        let real = self.keys[self.current].vp();
        let shadow = tke_proto::Vp([0x5a; 32]);
        let (old, new) = if self.shadowed {
            (shadow, real)
        } else {
            (real, shadow)
        };
        let took = floor::rewrite(raw, &old, &new, self.batch.get());
        assert_eq!(self.store.count_by_vp(&old).unwrap(), 0);
        self.shadowed = !self.shadowed;
        took
    }
}

fn aes_rewrap(w: &WrappedKey, old: &KekAes256, new: &KekAes256) -> Result<WrappedKey, RewrapError> {
    let mut data = zeroize::Zeroizing::new([0u8; 32]);
    // aes-kw 0.2's error has Display but not std::error::Error (without its `std`).
    let len = old
        .unwrap_with_padding(w.as_bytes(), data.as_mut())
        .map_err(|e| e.to_string())?
        .len();
    let mut out = vec![0u8; 40];
    new.wrap_with_padding(&data[..len], &mut out)
        .map_err(|e| e.to_string())?;
    Ok(WrappedKey::new(out)?)
}

fn copy_rewrap(w: &WrappedKey, _: &KekAes256, _: &KekAes256) -> Result<WrappedKey, RewrapError> {
    Ok(w.clone())
}

fn rotation(c: &mut Criterion) {
    // `cargo test --all-targets` runs each benchmark once without `--bench`: a small
    // store then, so that CI checks the benchmark without a minute of setup.
    let full = std::env::args().any(|a| a == "--bench");
    let records = env_usize(
        "TKE_KEYSTORE_BENCH_RECORDS",
        if full { 1_000_000 } else { 1_000 },
    );
    let batch = env_usize("TKE_KEYSTORE_BENCH_BATCH", if full { 10_000 } else { 100 });
    let dir = tempfile::tempdir().unwrap();
    let mut bench = Bench::setup(&dir.path().join("bench.keys"), records, batch);

    let mut group = c.benchmark_group(format!("rotate_{records}_batch_{batch}"));
    // One rotation (seconds) per iteration and per sample.
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    {
        // Closed before the store runs again: with a second connection open, the store's
        // rotation of 1M keys took twice as long.
        let mut raw = floor::raw_connection(&bench.path);
        group.bench_function("sqlite_floor", |b| {
            b.iter_custom(|iters| (0..iters).map(|_| bench.rotate_sql(&mut raw)).sum())
        });
        if bench.shadowed {
            bench.rotate_sql(&mut raw);
        }
    }
    group.bench_function("rewrap_aes", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| bench.rotate(aes_rewrap)).sum())
    });
    group.bench_function("rewrap_copy", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| bench.rotate(copy_rewrap)).sum())
    });
    group.finish();
}

criterion_group!(benches, rotation);
criterion_main!(benches);
