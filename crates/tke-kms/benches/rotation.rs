//! Rotation of 1,000,000 root keys through `LocalKms` on the embedded fleet's soft units
//! (protocol v4 `rewrap` requests of 1024 keys, each answer signed by the unit and
//! verified) and its SQLite key store, against a plain SQLite rewrite of the same rows in
//! the same run (the key store's benchmark floor, same batch size).
//!
//! Each iteration: a new master key is loaded and committed in every unit (not timed),
//! then begin + re-encrypt + finish is timed, then the new key is set immediate (not
//! timed), so the next iteration rotates the records again.
//!
//! `TKE_KMS_BENCH_KEYS` changes the size; run as a test (no `--bench`), 2,000 keys.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../../tke-keystore/benches/floor/mod.rs"]
mod floor;

use std::{
    num::NonZeroUsize,
    time::{Duration, Instant},
};

use aes_kw::KekAes256;
use cpu_time::{ProcessTime, ThreadTime};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use tke_client::kms::{store_path, ClientUnits};
use tke_keystore::{KeyName, SqliteKeyStore};
use tke_kms::{KeyService, LocalKms};
use tke_proto::MasterKey;

/// Rows per store transaction of `LocalKms::reencrypt`: 8 unit calls of 1024 keys.
const STORE_BATCH: usize = 8 * 1024;

/// The service over the rig's store file and units, `workers` units rewrapping at once.
fn local_kms(rig: &common::Rig, create: bool, workers: usize) -> LocalKms {
    let path = store_path(&rig.dir.path().join("local/keys"), &rig.instance);
    let store = if create {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        SqliteKeyStore::create(&path).unwrap()
    } else {
        SqliteKeyStore::open(&path).unwrap()
    };
    LocalKms::new(
        Box::new(store),
        Box::new(ClientUnits::new(rig.another_client(), rig.instance.clone())),
        "bench",
    )
    .with_rewrap_workers(NonZeroUsize::new(workers).unwrap())
}

/// The bare crypto of a rotation: `values` (AES-KWP under `old`) unwrapped and wrapped
/// under `new`, on `threads` threads, key schedules expanded once.
fn kwp_rewrap(values: &[Vec<u8>], old: &MasterKey, new: &MasterKey, threads: usize) -> Duration {
    let (old, new) = (
        KekAes256::from(*old.expose_secret()),
        KekAes256::from(*new.expose_secret()),
    );
    let start = Instant::now();
    std::thread::scope(|s| {
        for part in values.chunks(values.len().div_ceil(threads).max(1)) {
            let (old, new) = (&old, &new);
            s.spawn(move || {
                let mut key = zeroize::Zeroizing::new([0u8; 32]);
                let mut out = [0u8; 40];
                for v in part {
                    let n = old.unwrap_with_padding(v, key.as_mut()).unwrap().len();
                    new.wrap_with_padding(&key[..n], &mut out).unwrap();
                    std::hint::black_box(&out);
                }
            });
        }
    });
    start.elapsed()
}

fn rotation(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let keys: u32 = std::env::var("TKE_KMS_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 1_000_000 } else { 2_000 });
    let rig = common::Rig::new();
    let start = Instant::now();
    let name = KeyName::new("bench").unwrap();
    {
        let kms = local_kms(&rig, true, 1);
        let mut made = 0;
        while made < keys {
            let n = (keys - made).min(100_000);
            kms.create(&name, n).unwrap();
            made += n;
        }
    }
    eprintln!(
        "created {keys} root keys in units in {:.1?}",
        start.elapsed()
    );
    let path = store_path(&rig.dir.path().join("local/keys"), &rig.instance);

    let mut group = c.benchmark_group(format!("kms_rotate_{keys}"));
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    {
        let mut raw = floor::raw_connection(&path);
        let shadow = tke_proto::Vp([0x5a; 32]);
        let mut shadowed = false;
        group.bench_function("sqlite_floor", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let real = rig.current_vp();
                        let (old, new) = if shadowed {
                            (shadow, real)
                        } else {
                            (real, shadow)
                        };
                        shadowed = !shadowed;
                        floor::rewrite(&mut raw, &old, &new, STORE_BATCH)
                    })
                    .sum()
            })
        });
        if shadowed {
            floor::rewrite(&mut raw, &shadow, &rig.current_vp(), STORE_BATCH);
        }
    }
    {
        // The same number of 40-byte values as the store holds, in memory.
        let (old, new) = (MasterKey::random(), MasterKey::random());
        let kek = KekAes256::from(*old.expose_secret());
        let values: Vec<Vec<u8>> = (0..keys)
            .map(|_| {
                kek.wrap_with_padding_vec(MasterKey::random().expose_secret())
                    .unwrap()
            })
            .collect();
        for threads in [1, 2] {
            group.bench_function(format!("aes_kwp_{threads}_thread"), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| kwp_rewrap(&values, &old, &new, threads))
                        .sum()
                })
            });
        }
    }
    // `LocalKms` with 1 and 2 units rewrapping at once, each beside the store's thread,
    // re-encrypting in one call; then as `auto-mk-rotate` calls it (REENCRYPT_BATCH
    // records per call, for its progress lines).
    for (name, workers, per_call) in [
        ("localkms_soft_units_1", 1, u64::MAX),
        ("localkms_soft_units_2", 2, u64::MAX),
        (
            "localkms_ceremony_calls",
            1,
            tke_ceremony::rotate::REENCRYPT_BATCH,
        ),
    ] {
        let kms = local_kms(&rig, false, workers);
        let mut cpu = Vec::new();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let rotation = rig.commit_new();
                        let start = Instant::now();
                        let (store_cpu, all_cpu) = (ThreadTime::now(), ProcessTime::now());
                        kms.begin_rotation(rotation).unwrap();
                        let mut p = kms.reencrypt(per_call).unwrap();
                        while p.remaining() > 0 {
                            p = kms.reencrypt(per_call).unwrap();
                        }
                        let finish = Instant::now();
                        kms.finish_rotation().unwrap();
                        let took = start.elapsed();
                        cpu.push((
                            took,
                            finish.elapsed(),
                            store_cpu.elapsed(),
                            all_cpu.elapsed(),
                        ));
                        assert_eq!((p.done, p.total), (u64::from(keys), u64::from(keys)));
                        rig.set_immediate();
                        took
                    })
                    .sum()
            })
        });
        cpu.sort();
        if let Some((wall, finish, store, all)) = cpu.get(cpu.len() / 2) {
            // The store's thread is this one; the rest of the process's CPU is the
            // workers' (the units' rewrap, the protocol). On idle cores the pipeline's
            // wall time tends to the larger of the two. `finish_rotation` ends with the
            // store's checkpoint, which the SQL floor does not do.
            eprintln!(
                "{name}: median run {wall:.2?} wall, of which finish_rotation {finish:.2?}; \
                 CPU: store thread {store:.2?}, unit workers {:.2?}, in all {all:.2?}",
                all.saturating_sub(*store)
            );
        }
    }
    group.finish();
}

criterion_group!(benches, rotation);
criterion_main!(benches);
