//! Rewrap of a key store's root keys from the current to the new master key, through the
//! unit, against the bare cryptography measured in the same run.
//!
//! The unit: one recovery unit whose current register is Valid and whose new register is
//! Full Committed; every root key goes through `rewrap` service requests of
//! [`MAX_SERVICE_BATCH`] keys, each encoded, answered (device signature included), and
//! checked as a client checks it (signature, binding, one key out per key in).
//!
//! The bare rewrap of the same number of keys:
//! - soft: RFC 5649 unwrap under one key and wrap under another with `aes-kw`, as the soft
//!   backend does, without the unit;
//! - SoftHSM2: `C_UnwrapKey` into a session object, `C_WrapKey`, `C_DestroyObject`, per
//!   key, on a token of its own (a session object must be destroyed, or a million of them
//!   pile up in the token), under two keys that are session objects (the token's best
//!   case) or token objects (as a unit's master keys are: the like-for-like figure).
//!
//! Run: `cargo bench -p tke-unit --bench rewrap` (`TKE_BENCH_KEYS`, default 10,000 keys).
//! After criterion's figures it prints, for each backend, the best of five alternating
//! timings of the unit and of each bare rewrap, their ratio (bare / unit; target ≥ 0.7 on
//! SoftHSM2) and the time for 1,000,000 keys extrapolated linearly. As a test
//! (`cargo test --all-targets`) it runs once with 2,048 keys.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod bare_token;
mod common;

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use aes_kw::KekAes256;
use bare_token::BareToken;
use common::Fleet;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tke_proto::{
    der::{asn1::OctetString, Decode, Encode},
    Command, Request, Rewrap, ServiceOp, ServiceOutput, ServiceRequest, SignedResponse, Threshold,
    UnitId, UnitType, Vp, MAX_SERVICE_BATCH,
};
use tke_sigkey::Signer as _;
use tke_test_support::{softhsm, Tokens};
use tke_unit::{MemorySecrets, Pkcs11Backend, Pkcs11Config, SoftBackend, Unit};

const DEFAULT_KEYS: usize = 10_000;
const TEST_KEYS: usize = 2_048;

fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn keys_wanted() -> usize {
    if !bench_mode() {
        return TEST_KEYS;
    }
    std::env::var("TKE_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_KEYS)
}

/// Sends a service request and checks the answer as a client does.
fn service(unit: &mut Unit, op: ServiceOp) -> ServiceOutput {
    let request = Request::Service(ServiceRequest::new(unit.id(), op));
    let der = request.to_der().unwrap();
    let body = SignedResponse::from_der(&unit.handle(&der))
        .unwrap()
        .verify(&unit.device_certificate().verifying_key(), &unit.id(), &der)
        .unwrap();
    assert_eq!(body.error(), None);
    let Request::Service(request) = request else {
        unreachable!()
    };
    request.decode_output(body.output.as_bytes()).unwrap()
}

/// A unit in the middle of a rotation and the root keys it must rewrap.
struct Rotation {
    unit: Unit,
    from: Vp,
    to: Vp,
    keys: Vec<OctetString>,
}

impl Rotation {
    fn new(fleet: &Fleet, mut unit: Unit, n: usize) -> Self {
        fleet.run(
            &mut unit,
            &Command::AddAdmin(fleet.admins[0].certificate().clone()),
            0,
        );
        let one = Threshold::new(1).unwrap();
        fleet.run(
            &mut unit,
            &Command::SetThresholds {
                signature: one,
                revocation: one,
            },
            1,
        );
        let from = Vp::from_slice(&fleet.run(&mut unit, &Command::GenerateRandomMk, 1)).unwrap();
        let mut keys = Vec::with_capacity(n);
        while keys.len() < n {
            let count = (n - keys.len()).min(MAX_SERVICE_BATCH) as u32;
            match service(&mut unit, ServiceOp::GenerateKeys(count)) {
                ServiceOutput::Generated(g) => keys.extend(g.keys),
                other => panic!("{other:?}"),
            }
        }
        let to = Vp::from_slice(&fleet.run(&mut unit, &Command::GenerateRandomMk, 1)).unwrap();
        fleet.run(&mut unit, &Command::CommitMk(to), 1);
        Self {
            unit,
            from,
            to,
            keys,
        }
    }

    /// Every key through `rewrap` requests; returns how many came back.
    fn rewrap(&mut self) -> usize {
        let mut done = 0;
        for batch in self.keys.chunks(MAX_SERVICE_BATCH) {
            let op = ServiceOp::Rewrap(Rewrap {
                from: self.from,
                to: self.to,
                keys: batch.to_vec(),
            });
            match service(&mut self.unit, op) {
                ServiceOutput::Rewrapped(out) => done += black_box(out).len(),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(done, self.keys.len());
        done
    }
}

/// The bare soft rewrap: `aes-kw` unwrap and wrap of the same number of keys.
struct BareSoft {
    old: KekAes256,
    new: KekAes256,
    keys: Vec<Vec<u8>>,
}

impl BareSoft {
    fn new(n: usize) -> Self {
        let random = || {
            let mut k = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut k);
            k
        };
        let old = KekAes256::from(random());
        let keys = (0..n)
            .map(|_| old.wrap_with_padding_vec(&random()).unwrap())
            .collect();
        Self {
            old,
            new: KekAes256::from(random()),
            keys,
        }
    }

    fn rewrap(&self) -> usize {
        for k in &self.keys {
            let mut root = [0u8; 32];
            self.old.unwrap_with_padding(k, &mut root).unwrap();
            let mut out = [0u8; 40];
            self.new.wrap_with_padding(&root, &mut out).unwrap();
            black_box(out);
        }
        self.keys.len()
    }
}

/// How long `f` takes.
fn time(f: impl FnOnce() -> usize) -> Duration {
    let start = Instant::now();
    black_box(f());
    start.elapsed()
}

fn report(name: &str, n: usize, unit: Duration, bare: Duration, bare_what: &str) {
    let per_second = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "rewrap of {n} keys, {name}: unit {:.3} s ({:.0} keys/s), {bare_what} {:.3} s ({:.0} keys/s); \
         ratio bare/unit {:.2}; 1,000,000 keys through the unit extrapolated: {:.1} s",
        unit.as_secs_f64(),
        per_second(unit),
        bare.as_secs_f64(),
        per_second(bare),
        bare.as_secs_f64() / unit.as_secs_f64(),
        unit.as_secs_f64() * 1e6 / n as f64,
    );
}

fn bench(c: &mut Criterion) {
    let n = keys_wanted();
    let fleet = Fleet::new();
    let d = tempfile::tempdir().unwrap();
    // SoftHSM2 tokens, made before the module is loaded (it lists tokens once); set while
    // this process is single-threaded, before anything reads it.
    let labels = ["rewrap-unit", "rewrap-bare-session", "rewrap-bare-token"];
    let tokens = Tokens::make(&d.path().join("tokens"), &labels);
    tokens.set_conf_for_this_process();

    let id = UnitId::random();
    let soft = SoftBackend::create_in_memory(&MemorySecrets::new(), id).unwrap();
    let mut soft = Rotation::new(
        &fleet,
        fleet.in_memory(id, UnitType::Recovery, Box::new(soft)),
        n,
    );
    let bare_soft = BareSoft::new(n);

    let id = UnitId::random();
    let config = Pkcs11Config::new(
        softhsm::module_text(),
        labels[0],
        tokens.pin_path(labels[0]),
    );
    let token = Pkcs11Backend::create_on_token(&config, id, UnitType::Recovery).unwrap();
    let wrap = token.wrap_mechanism();
    let mut token = Rotation::new(
        &fleet,
        fleet.in_memory(id, UnitType::Recovery, Box::new(token)),
        n,
    );
    let bare_session = BareToken::new(&tokens, labels[1], wrap.mechanism(), false, n);
    let bare_token = BareToken::new(&tokens, labels[2], wrap.mechanism(), true, n);

    let mut group = c.benchmark_group(format!("rewrap_{n}_keys"));
    group.sample_size(10);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function("soft_unit", |b| b.iter(|| soft.rewrap()));
    group.bench_function("soft_bare_aes_kw", |b| b.iter(|| bare_soft.rewrap()));
    group.bench_function("softhsm2_unit", |b| b.iter(|| token.rewrap()));
    group.bench_function("softhsm2_bare_session_keks", |b| {
        b.iter(|| bare_session.rewrap())
    });
    group.bench_function("softhsm2_bare_token_keks", |b| {
        b.iter(|| bare_token.rewrap())
    });
    group.finish();

    // The ratios, from alternating timings in this same run (the best of each: the machine
    // is shared, and the best is the least disturbed).
    let rounds = if bench_mode() { 5 } else { 1 };
    let (mut unit, mut bare) = (Duration::MAX, Duration::MAX);
    for _ in 0..rounds {
        unit = unit.min(time(|| soft.rewrap()));
        bare = bare.min(time(|| bare_soft.rewrap()));
    }
    report("soft", n, unit, bare, "bare aes-kw");
    let (mut unit, mut session, mut token_keks) = (Duration::MAX, Duration::MAX, Duration::MAX);
    for _ in 0..rounds {
        unit = unit.min(time(|| token.rewrap()));
        session = session.min(time(|| bare_session.rewrap()));
        token_keks = token_keks.min(time(|| bare_token.rewrap()));
    }
    report(
        "SoftHSM2",
        n,
        unit,
        session,
        "bare C_UnwrapKey+C_WrapKey under session keys",
    );
    report(
        "SoftHSM2",
        n,
        unit,
        token_keks,
        "bare C_UnwrapKey+C_WrapKey under token keys",
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
