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
//!
//! The SoftHSM2 part: the same rotation on a fleet whose units are all on SoftHSM2 tokens
//! (`TKE_PKCS11_MODULE`, as the tests), 10,000 keys (`TKE_KMS_BENCH_PKCS11_KEYS`; 512 as
//! a test), with 1 unit rewrapping at a time and with the default for PKCS#11 units
//! (`tke_kms::PKCS11_REWRAP_WORKERS`, at most one per operational unit: 2 here), against
//! the bare token rewrap (`C_UnwrapKey` + `C_WrapKey` + `C_DestroyObject` per key, under
//! token-object keys as a unit's master keys are, and under session-object keys) on one
//! thread and on two, measured in the same run. It prints the best of five alternating
//! timings of each and the ratios. `TKE_KMS_BENCH=softhsm2` runs that part only,
//! `TKE_KMS_BENCH=soft` the soft part only.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tke-unit/benches/bare_token/mod.rs"]
mod bare_token;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../../tke-keystore/benches/floor/mod.rs"]
mod floor;

use std::{
    num::NonZeroUsize,
    sync::mpsc,
    time::{Duration, Instant},
};

use aes_kw::KekAes256;
use bare_token::BareToken;
use cpu_time::{ProcessTime, ThreadTime};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use tke_client::{
    embedded::{Pkcs11Placement, Pkcs11Units, Placement},
    kms::{store_path, ClientUnits},
};
use tke_keystore::{KeyName, SqliteKeyStore};
use tke_kms::{KeyService, LocalKms};
use tke_proto::MasterKey;
use tke_test_support::{softhsm, Tokens};

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

/// Whether the part `name` (`soft`, `softhsm2`) runs: `TKE_KMS_BENCH` names one, or
/// both run.
fn part(name: &str) -> bool {
    std::env::var("TKE_KMS_BENCH").map_or(true, |p| p == name)
}

fn rotation(c: &mut Criterion) {
    if !part("soft") {
        return;
    }
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

/// One whole rotation (begin, re-encrypt to the end, finish) through `kms`, then the new
/// key set immediate (not timed); returns the rotation's time.
fn rotate_once(rig: &common::Rig, kms: &LocalKms, keys: u64) -> Duration {
    let rotation = rig.commit_new();
    let start = Instant::now();
    kms.begin_rotation(rotation).unwrap();
    let p = kms.reencrypt(u64::MAX).unwrap();
    kms.finish_rotation().unwrap();
    let took = start.elapsed();
    assert_eq!((p.done, p.total), (keys, keys));
    rig.set_immediate();
    took
}

/// A bare token rewrap on a thread of its own (its PKCS#11 session stays there): each
/// message on `go` rewraps its keys once and answers on `done`.
struct BareThread {
    go: mpsc::Sender<()>,
    done: mpsc::Receiver<()>,
}

impl BareThread {
    fn spawn<'s>(
        scope: &'s std::thread::Scope<'s, '_>,
        tokens: &'s Tokens,
        label: &'s str,
        wrap: tke_unit::WrapMechanism,
        token_keks: bool,
        n: usize,
    ) -> Self {
        let (go, go_rx) = mpsc::channel::<()>();
        let (done_tx, done) = mpsc::channel();
        scope.spawn(move || {
            let bare = BareToken::new(tokens, label, wrap.mechanism(), token_keks, n);
            done_tx.send(()).unwrap();
            for () in go_rx {
                bare.rewrap();
                done_tx.send(()).unwrap();
            }
        });
        // Ready once its keys are made.
        done.recv().unwrap();
        Self { go, done }
    }
}

/// The bare token rewrap of every key of `threads`, all at once.
fn bare_rewrap(threads: &[&BareThread]) -> Duration {
    let start = Instant::now();
    for t in threads {
        t.go.send(()).unwrap();
    }
    for t in threads {
        t.done.recv().unwrap();
    }
    start.elapsed()
}

fn rotation_softhsm2(_: &mut Criterion) {
    if !part("softhsm2") {
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let keys: usize = std::env::var("TKE_KMS_BENCH_PKCS11_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 10_000 } else { 512 });
    // Tokens made before the module is loaded (it lists tokens once): one per unit of the
    // default fleet (2 operational, 2 recovery), six for the bare rewraps and one to ask
    // which wrap mechanism the units use.
    let d = tempfile::tempdir().unwrap();
    let units = ["kms-op-1", "kms-op-2", "kms-rec-1", "kms-rec-2"];
    let bare = [
        "bare-token-1",
        "bare-token-2a",
        "bare-token-2b",
        "bare-session-1",
        "bare-session-2a",
        "bare-session-2b",
        "kms-probe",
    ];
    let labels: Vec<&str> = units.iter().chain(&bare).copied().collect();
    let tokens = Tokens::make(&d.path().join("tokens"), &labels);
    tokens.set_conf_for_this_process();
    let rig = common::Rig::with_placement(&Placement::pkcs11(Pkcs11Placement {
        module: softhsm::module(),
        units: Pkcs11Units::All,
        tokens: units.iter().map(|l| (*l).to_owned()).collect(),
        pin_file: tokens.pin_pattern().into(),
    }));
    let start = Instant::now();
    local_kms(&rig, true, 1)
        .create(
            &KeyName::new("bench").unwrap(),
            u32::try_from(keys).unwrap(),
        )
        .unwrap();
    eprintln!(
        "created {keys} root keys in SoftHSM2 units in {:.1?}",
        start.elapsed()
    );
    let (one, default) = (local_kms(&rig, false, 1), {
        let w = tke_kms::default_rewrap_workers(["pkcs11"]);
        local_kms(&rig, false, w.get())
    });
    // The mechanism the units wrap with (RFC 5649 as the token offers it).
    let probe = tke_unit::Pkcs11Config::new(
        softhsm::module_text(),
        "kms-probe",
        tokens.pin_path("kms-probe"),
    );
    let wrap = tke_unit::Pkcs11Backend::create_on_token(
        &probe,
        tke_proto::UnitId::random(),
        tke_proto::UnitType::Recovery,
    )
    .unwrap()
    .wrap_mechanism();
    let half = keys.div_ceil(2);
    let rounds = if full { 5 } else { 1 };
    // Best of five, alternated, so that a loaded minute weighs on every figure alike.
    let mut best = [Duration::MAX; 6];
    std::thread::scope(|s| {
        let on = |label, token_keks, n| BareThread::spawn(s, &tokens, label, wrap, token_keks, n);
        let (t1, t1_half, t2) = (
            on(bare[0], true, keys),
            on(bare[1], true, keys - half),
            on(bare[2], true, half),
        );
        let (s1, s1_half, s2) = (
            on(bare[3], false, keys),
            on(bare[4], false, keys - half),
            on(bare[5], false, half),
        );
        for _ in 0..rounds {
            let runs = [
                rotate_once(&rig, &one, keys as u64),
                rotate_once(&rig, &default, keys as u64),
                bare_rewrap(&[&t1]),
                bare_rewrap(&[&t1_half, &t2]),
                bare_rewrap(&[&s1]),
                bare_rewrap(&[&s1_half, &s2]),
            ];
            for (b, r) in best.iter_mut().zip(runs) {
                *b = (*b).min(r);
            }
        }
    });
    let rate = |d: Duration| keys as f64 / d.as_secs_f64();
    let [one_unit, workers, token_1, token_2, session_1, session_2] = best.map(rate);
    println!(
        "SoftHSM2 rotation of {keys} keys (best of {rounds}): 1 unit rewrapping {one_unit:.0} \
         keys/s, default workers ({} for pkcs11, 2 operational units) {workers:.0} keys/s",
        tke_kms::PKCS11_REWRAP_WORKERS,
    );
    println!(
        "  bare C_UnwrapKey+C_WrapKey pairs: token-object keys {token_1:.0}/s on 1 thread, \
         {token_2:.0}/s on 2; session-object keys {session_1:.0}/s on 1 thread, {session_2:.0}/s on 2"
    );
    println!(
        "  ratio rotation / bare pairs on 1 thread: 1 unit {:.2} (token keys) {:.2} (session \
         keys); default workers {:.2} (token keys) {:.2} (session keys)",
        one_unit / token_1,
        one_unit / session_1,
        workers / token_1,
        workers / session_1,
    );
    println!(
        "  ratio default workers / bare pairs on 2 threads: {:.2} (token keys) {:.2} (session keys)",
        workers / token_2,
        workers / session_2,
    );
}

// The SoftHSM2 part first: it sets the tokens' configuration for the process while it is
// single-threaded.
criterion_group!(benches, rotation_softhsm2, rotation);
criterion_main!(benches);
