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

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use tke_client::kms::store_path;
use tke_keystore::KeyName;

/// Rows per store transaction of `LocalKms::reencrypt`: 8 unit calls of 1024 keys.
const STORE_BATCH: usize = 8 * 1024;

fn rotation(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let keys: u32 = std::env::var("TKE_KMS_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 1_000_000 } else { 2_000 });
    let rig = common::Rig::new();
    let kms = rig.kms();
    let start = Instant::now();
    let name = KeyName::new("bench").unwrap();
    let mut made = 0;
    while made < keys {
        let n = (keys - made).min(100_000);
        kms.create(&name, n).unwrap();
        made += n;
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
    group.bench_function("localkms_soft_units", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let rotation = rig.commit_new();
                    let start = Instant::now();
                    kms.begin_rotation(rotation).unwrap();
                    let p = kms.reencrypt(u64::MAX).unwrap();
                    kms.finish_rotation().unwrap();
                    let took = start.elapsed();
                    assert_eq!((p.done, p.total), (u64::from(keys), u64::from(keys)));
                    rig.set_immediate();
                    took
                })
                .sum()
        })
    });
    group.finish();
}

criterion_group!(benches, rotation);
criterion_main!(benches);
