//! What one `auto-init` costs, split into its parts:
//!
//! - `auto_init/6_units`: the ceremony itself on an embedded fleet of 2 operational +
//!   2 recovery + 2 failover units, thresholds 2/2, three administrators whose keys are
//!   already open (passwords preloaded): unit commands, signatures, transport, parallel
//!   fan-out.
//! - `key_file/open`: opening one signature key file (the scrypt KDF, N = 2^14, r = 8,
//!   p = 1, then decryption) — paid once per administrator key used.
//! - `key_file/generate`: creating one key file (key generation, certificate, the KDF,
//!   atomic writes) — paid once per new administrator.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use tke_ceremony::{AutoInit, Silent};
use tke_client::{Client, EmbeddedFleet, FleetSpec, Transport};
use tke_proto::{AdminName, Threshold};
use tke_sigkey::Signer;
use tke_sigkey_file::FileSigner;
use tke_workstation::{FilesDir, Password};

fn bench(c: &mut Criterion) {
    let keys_dir = tempfile::tempdir().unwrap();
    let files = FilesDir::resolve(Some(keys_dir.path())).unwrap();
    let signers: Vec<FileSigner> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| {
            FileSigner::generate(
                &files,
                &AdminName::new(n).unwrap(),
                &Password::new("pw-1234"),
            )
            .unwrap()
        })
        .collect();

    let mut g = c.benchmark_group("auto_init");
    g.sample_size(10);
    g.bench_function("6_units", |b| {
        b.iter_batched(
            || {
                // A fresh fleet for every run: auto-init needs units in imprint mode.
                let dir = tempfile::tempdir().unwrap();
                let spec = FleetSpec {
                    instances: 1,
                    operational: 2,
                    recovery: 2,
                    failover: 2,
                };
                let fleet = EmbeddedFleet::create(&dir.path().join("local"), spec).unwrap();
                let ca = fleet.ca().clone();
                let t: Arc<dyn Transport> = Arc::new(fleet);
                (dir, Client::connect(vec![(t, ca)]).unwrap())
            },
            |(_dir, client)| {
                let plan = AutoInit {
                    instance: client.instances()[0].clone(),
                    sig_threshold: Threshold::new(2).unwrap(),
                    rev_threshold: Threshold::new(2).unwrap(),
                    admins: signers.iter().map(|s| s as &dyn Signer).collect(),
                }
                .plan(&client)
                .unwrap();
                plan.execute(&Silent).unwrap()
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("key_file");
    g.sample_size(20);
    let entry = files.signature_keys().unwrap().entries[0].clone();
    g.bench_function("open", |b| {
        b.iter(|| FileSigner::open(&entry, &Password::new("pw-1234")).unwrap())
    });
    let gen_dir = tempfile::tempdir().unwrap();
    let gen_files = FilesDir::resolve(Some(gen_dir.path())).unwrap();
    let mut i = 0u32;
    g.bench_function("generate", |b| {
        b.iter(|| {
            i += 1;
            FileSigner::generate(
                &gen_files,
                &AdminName::new(&format!("k{i}")).unwrap(),
                &Password::new("pw-1234"),
            )
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
