//! The command sequence of one auto-init on soft units and on SoftHSM2-backed units: the
//! same four units (one recovery, three operational), the same signed commands.
//!
//! Per iteration: 3 `addAdmin` and `setThresholds` on every unit, `generateRandomMk` on the
//! recovery unit, then for each operational unit `generateImporter`, `exportMk`,
//! `importMk`, `commitMk` and `setImmediate` — 27 commands, each signed by the
//! administrators and answered with a response signed by the unit's device key. The units
//! are zeroized between iterations (not measured).
//!
//! Three variants:
//! - `soft_memory`: state in a `MemoryStore`, secrets in `MemorySecrets`: the unit's own
//!   work (signatures, ECDH, DER) with no I/O at all;
//! - `soft_files`: a unit directory as `tke-unitd` keeps it, which fsyncs its state and
//!   secrets files at each command: the cost of the durable write;
//! - `softhsm2`: state in a `MemoryStore`, secrets on a SoftHSM2 token: the token's cost
//!   (SoftHSM2 rewrites its object files) without the state file's.
//!
//! Run: `cargo bench -p tke-unit --bench auto_init -- --warm-up-time 1 --measurement-time 5`.
//! Figure to reach: `softhsm2` within 5x `soft_files`, both bound by disk writes, so the
//! absolute times follow the disk. Measured on the 2-core CI machine under load, when
//! every variant still wrote its state file: soft 544 ms, SoftHSM2 1.65 s (3.0x).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use common::Fleet;
use criterion::{criterion_group, criterion_main, Criterion};
use tke_proto::{
    der::{asn1::OctetString, Decode},
    transport::{CertifiedImporter, ExportRequest, SignedEnvelope},
    Command, Register, Threshold, UnitId, UnitType, Vp,
};
use tke_sigkey::Signer as _;
use tke_test_support::{softhsm, Tokens};
use tke_unit::{MemorySecrets, Pkcs11Backend, Pkcs11Config, SoftBackend, Unit};

const TARGETS: usize = 3;

trait AutoInit {
    fn auto_init(&self, units: &mut [Unit]) -> Vp;
    fn zeroize(&self, units: &mut [Unit]);
    fn units(&self, make: impl FnMut(usize, UnitId, UnitType) -> Unit) -> Vec<Unit>;
}

impl AutoInit for Fleet {
    /// One auto-init: administrators and thresholds everywhere, a random key on the
    /// recovery unit, moved to every target.
    fn auto_init(&self, units: &mut [Unit]) -> Vp {
        for u in units.iter_mut() {
            for a in &self.admins {
                self.run(u, &Command::AddAdmin(a.certificate().clone()), 0);
            }
            let two = Threshold::new(2).unwrap();
            self.run(
                u,
                &Command::SetThresholds {
                    signature: two,
                    revocation: two,
                },
                2,
            );
        }
        let (rec, targets) = units.split_first_mut().unwrap();
        let vp = Vp::from_slice(&self.run(rec, &Command::GenerateRandomMk, 1)).unwrap();
        for t in targets {
            let importer =
                CertifiedImporter::from_der(&self.run(t, &Command::GenerateImporter, 1)).unwrap();
            let req = ExportRequest {
                register: Register::Current,
                target_certificate: OctetString::new(t.device_certificate().der().to_vec())
                    .unwrap(),
                importer,
                target_instance: None,
            };
            let env =
                SignedEnvelope::from_der(&self.run(rec, &Command::ExportMk(Box::new(req)), 2))
                    .unwrap();
            self.run(t, &Command::ImportMk(Box::new(env)), 1);
            self.run(t, &Command::CommitMk(vp), 2);
            self.run(t, &Command::SetImmediate(vp), 1);
        }
        vp
    }

    fn zeroize(&self, units: &mut [Unit]) {
        // The recovery unit's zeroize needs the signature threshold (2).
        for u in units.iter_mut() {
            self.run(u, &Command::Zeroize, 2);
        }
    }

    /// One recovery unit and the targets, the `i`-th made by `make(i, id, type)`.
    fn units(&self, mut make: impl FnMut(usize, UnitId, UnitType) -> Unit) -> Vec<Unit> {
        (0..=TARGETS)
            .map(|i| {
                let ty = if i == 0 {
                    UnitType::Recovery
                } else {
                    UnitType::Operational
                };
                make(i, UnitId::random(), ty)
            })
            .collect()
    }
}

fn bench(c: &mut Criterion) {
    let fleet = Fleet::new();
    let d = tempfile::tempdir().unwrap();

    // SoftHSM2 tokens, made before the module is loaded (it lists tokens once); set
    // while this process is single-threaded, before anything reads it.
    let labels: Vec<String> = (0..=TARGETS).map(|i| format!("bench-{i}")).collect();
    let tokens = Tokens::make(&d.path().join("tokens"), &labels);
    tokens.set_conf_for_this_process();

    let mut memory = fleet.units(|_, id, ty| {
        let backend = SoftBackend::create_in_memory(&MemorySecrets::new(), id).unwrap();
        fleet.in_memory(id, ty, Box::new(backend))
    });
    let mut files = fleet.units(|i, id, ty| {
        let dir = d.path().join(format!("soft-{i}"));
        Unit::create_soft(&dir, id, ty, &fleet.ca, &mut |pk| fleet.issue(id, ty, pk)).unwrap()
    });
    let mut hsm = fleet.units(|i, id, ty| {
        let label = &labels[i];
        let config = Pkcs11Config::new(softhsm::module_text(), label, tokens.pin_path(label));
        let backend = Pkcs11Backend::create_on_token(&config, id, ty).unwrap();
        fleet.in_memory(id, ty, Box::new(backend))
    });

    let mut group = c.benchmark_group("auto_init_4_units");
    group.sample_size(10);
    for (name, units) in [
        ("soft_memory", &mut memory),
        ("soft_files", &mut files),
        ("softhsm2", &mut hsm),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut measured = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    black_box(fleet.auto_init(units));
                    measured += start.elapsed();
                    fleet.zeroize(units);
                }
                measured
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
