//! Signed commands per second under 8 concurrent clients, each driving its own soft unit
//! in a unit directory under one root, as `tke-unitd` hosts them: the file store (each
//! command rewrites `unit.json` atomically: write, fsync, rename, directory fsync) against
//! the journal with group commit (one append and one `fdatasync` for every unit that saved
//! meanwhile), and the same units with their state in memory (no disk write: the ceiling
//! the units' own work sets). Beside them, the fsync floor of this disk: one append of a state record
//! and `fdatasync`, and one atomic file write, single-threaded.
//!
//! Per iteration each client sends 50 `clearNew` commands, signed beforehand by the
//! unit's administrator (not timed); the unit verifies the signature, consumes the
//! counter, saves its state durably and signs its answer. Throughput is in commands.
//!
//! Run: `cargo bench -p tke-unit --bench state_store`. Measured on the 2-core CI machine
//! (ext4), figures in the crate README.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    fs::OpenOptions,
    io::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tke_proto::{der::Encode, Command, Request, UnitId, UnitType};
use tke_unit::{Journal, JournalOptions, MemoryStore, StateStore, Unit, STATE_FILE};

use support::{init, signed_command, Fleet, MemSigner};

const CLIENTS: usize = 8;
const PER_CLIENT: usize = 50;

/// Makes the units, out of imprint mode with `admin` alone signing; returns their ids.
fn make_units(root: &Path, fleet: &Fleet, admin: &MemSigner) -> Vec<UnitId> {
    (0..CLIENTS)
        .map(|_| {
            let id = UnitId::random();
            let ty = UnitType::Operational;
            let mut unit = Unit::create_soft(&root.join(id.uuid()), id, ty, &fleet.ca, &mut |pk| {
                fleet.issue(id, ty, pk)
            })
            .unwrap();
            init(&mut unit, &fleet.ca, std::slice::from_ref(admin), 1, 1);
            id
        })
        .collect()
}

/// Sends `PER_CLIENT` signed commands to each unit, one thread per unit; returns the time
/// they took, signing excluded.
fn drive(units: &mut [Unit], admin: &MemSigner) -> Duration {
    let requests: Vec<Vec<Vec<u8>>> = units
        .iter()
        .map(|u| {
            let next = u.status().counter + 1;
            (next..next + PER_CLIENT as u64)
                .map(|c| {
                    Request::Command(signed_command(u.id(), c, &Command::ClearNew, &[admin]))
                        .to_der()
                        .unwrap()
                })
                .collect()
        })
        .collect();
    let before: Vec<u64> = units.iter().map(|u| u.status().counter).collect();
    let start = Instant::now();
    std::thread::scope(|s| {
        for (unit, requests) in units.iter_mut().zip(&requests) {
            s.spawn(move || {
                for r in requests {
                    unit.handle(r);
                }
            });
        }
    });
    let took = start.elapsed();
    for (u, b) in units.iter().zip(before) {
        assert_eq!(
            u.status().counter,
            b + PER_CLIENT as u64,
            "every command ran"
        );
    }
    took
}

fn bench(c: &mut Criterion) {
    let fleet = Fleet::new("bench");
    let admin = MemSigner::new("admin1");
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let root = d.path().join("units");
    let ids = make_units(&root, &fleet, &admin);
    let record = std::fs::read(root.join(ids[0].uuid()).join(STATE_FILE)).unwrap();

    let mut g = c.benchmark_group("8_clients");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements((CLIENTS * PER_CLIENT) as u64));

    let mut files: Vec<Unit> = ids
        .iter()
        .map(|id| Unit::open(&root.join(id.uuid())).unwrap())
        .collect();
    g.bench_function("file_store", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| drive(&mut files, &admin)).sum())
    });
    drop(files);

    // The ceiling: the same units with their state in memory, no disk write at all.
    let mut memory: Vec<Unit> = ids
        .iter()
        .map(|id| {
            let dir = root.join(id.uuid());
            let mut store = MemoryStore::new();
            store
                .save(&std::fs::read(dir.join(STATE_FILE)).unwrap())
                .unwrap();
            Unit::open_with_store(&dir, Box::new(store)).unwrap()
        })
        .collect();
    g.bench_function("memory_store_no_disk", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| drive(&mut memory, &admin)).sum())
    });
    drop(memory);

    let journal = Journal::open(&root, JournalOptions::default()).unwrap();
    let mut journaled: Vec<Unit> = ids
        .iter()
        .map(|id| {
            let store: Box<dyn StateStore> = Box::new(journal.store(*id));
            Unit::open_with_store(&root.join(id.uuid()), store).unwrap()
        })
        .collect();
    g.bench_function("journal_group_commit", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| drive(&mut journaled, &admin)).sum())
    });
    let stats = journal.stats();
    eprintln!(
        "journal: {} records in {} fdatasyncs ({:.1} per flush), {} compactions",
        stats.records,
        stats.flushes,
        stats.records as f64 / stats.flushes.max(1) as f64,
        stats.compactions
    );
    drop(journaled);
    journal.close().unwrap();
    g.finish();

    // The floor: what one durable write of a state record costs on this disk.
    let mut g = c.benchmark_group("fsync_floor");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(d.path().join("floor.log"))
        .unwrap();
    g.bench_function("append_fdatasync", |b| {
        b.iter(|| {
            log.write_all(&record).unwrap();
            log.sync_data().unwrap();
        })
    });
    let file = d.path().join("floor.json");
    g.bench_function("atomic_file_write", |b| {
        b.iter(|| tke_fs::write_private(&file, &record).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
