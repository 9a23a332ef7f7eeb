//! The command sequence of one auto-init on soft units and on SoftHSM2-backed units: the
//! same four units (one recovery, three operational), the same signed commands.
//!
//! Per iteration: 3 `addAdmin` and `setThresholds` on every unit, `generateRandomMk` on the
//! recovery unit, then for each operational unit `generateImporter`, `exportMk`,
//! `importMk`, `commitMk` and `setImmediate` — 27 commands, each signed by the
//! administrators and answered with a response signed by the unit's device key. The units
//! are zeroized between iterations (not measured).
//!
//! Run: `cargo bench -p tke-unit --bench auto_init -- --warm-up-time 1 --measurement-time 5`.
//! Figure to reach: the SoftHSM2 sequence within 5x the soft one. Both are bound by disk
//! writes (the soft unit fsyncs its state and secrets files at each command; SoftHSM2
//! rewrites token object files), so the absolute times follow the disk. Measured on the
//! 2-core CI machine under load: soft 544 ms, SoftHSM2 1.65 s (3.0x).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    hint::black_box,
    path::Path,
    time::{Duration, Instant},
};

use criterion::{criterion_group, criterion_main, Criterion};
use tke_proto::{
    der::{asn1::OctetString, Decode, Encode},
    p256::{
        ecdsa::{signature::Signer as _, Signature, SigningKey},
        PublicKey,
    },
    transport::{CertifiedImporter, ExportRequest, SignedEnvelope},
    CaCertificate, Command, DeviceCertificate, Register, Request, ResponseBody, SignedResponse,
    Threshold, UnitId, UnitType, Vp,
};
use tke_sigkey::{sign_command, Signer};
use tke_test_support::{softhsm, MemSigner, Tokens};
use tke_unit::{Pkcs11Config, Unit};

const TARGETS: usize = 3;

struct Fleet {
    ca_key: SigningKey,
    ca: CaCertificate,
    admins: Vec<MemSigner>,
}

impl Fleet {
    fn new() -> Self {
        let ca_key = SigningKey::random(&mut rand_core::OsRng);
        let k = ca_key.clone();
        let ca = CaCertificate::build(
            "bench",
            &PublicKey::from(ca_key.verifying_key()),
            Box::new(move |m| Ok(Signature::to_der(&k.sign(m)))),
        )
        .unwrap();
        let admins = (1..=3)
            .map(|i| MemSigner::new(&format!("admin{i}")))
            .collect();
        Self { ca_key, ca, admins }
    }

    fn issue(
        &self,
        id: UnitId,
        pk: &PublicKey,
    ) -> Result<DeviceCertificate, tke_proto::ProtoError> {
        let k = self.ca_key.clone();
        DeviceCertificate::issue(
            &self.ca,
            &id,
            pk,
            Box::new(move |m| Ok(Signature::to_der(&k.sign(m)))),
        )
    }

    /// Signs and sends `command`, checks the signed answer, returns its output.
    fn run(&self, unit: &mut Unit, command: &Command, signers: usize) -> Vec<u8> {
        let wire = command
            .to_wire(unit.id(), unit.status().counter + 1)
            .unwrap();
        let signers: Vec<&dyn Signer> = self.admins[..signers]
            .iter()
            .map(|a| a as &dyn Signer)
            .collect();
        let req = Request::Command(sign_command(&wire, &signers).unwrap())
            .to_der()
            .unwrap();
        let answer = SignedResponse::from_der(&unit.handle(&req)).unwrap();
        let body: ResponseBody = answer
            .verify(&unit.device_certificate().verifying_key(), &unit.id(), &req)
            .unwrap();
        assert_eq!(body.error(), None, "{command:?}");
        body.output.as_bytes().to_vec()
    }

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
        for u in units.iter_mut() {
            self.run(u, &Command::Zeroize, 1);
        }
    }

    fn units(
        &self,
        dir: &Path,
        mut make: impl FnMut(&Path, UnitId, UnitType) -> Unit,
    ) -> Vec<Unit> {
        (0..=TARGETS)
            .map(|i| {
                let ty = if i == 0 {
                    UnitType::Recovery
                } else {
                    UnitType::Operational
                };
                make(&dir.join(format!("unit-{i}")), UnitId::random(), ty)
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

    let mut soft = fleet.units(&d.path().join("soft"), |dir, id, ty| {
        Unit::create_soft(dir, id, ty, &fleet.ca, &mut |pk| fleet.issue(id, pk)).unwrap()
    });
    let mut next = labels.iter();
    let mut hsm = fleet.units(&d.path().join("pkcs11"), |dir, id, ty| {
        let label = next.next().unwrap();
        let config = Pkcs11Config::new(softhsm::module_text(), label, tokens.pin_path(label));
        Unit::create_pkcs11(dir, id, ty, &fleet.ca, &config, &mut |pk| {
            fleet.issue(id, pk)
        })
        .unwrap()
    });

    let mut group = c.benchmark_group("auto_init_4_units");
    group.sample_size(10);
    for (name, units) in [("soft", &mut soft), ("softhsm2", &mut hsm)] {
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
