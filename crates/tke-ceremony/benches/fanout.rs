//! The fan-out figure: how a ceremony's time grows with the number of units when each
//! unit answers after a simulated HSM round trip of 20 ms ([`Latency`]), as real units
//! (separate HSMs) do. Without it, every emulated unit and the client share this
//! machine's cores, and the figure would measure the cores rather than the design.
//!
//! Fleets and ceremonies: `tests/fanout_sizes` — 2 units (one instance), 8 units (one
//! instance), 64 units (8 instances of 8 units on 4 embedded fleets standing in for
//! servers, every instance initialized at once). A fresh fleet per run (not timed): the
//! ceremonies need units in imprint mode. To add a ceremony, add it to `CEREMONIES`
//! there, with its target here in `TARGETS` if it differs.
//!
//! Targets: 8 units in at most 1.2 × the time of 2 units, 64 units in at most 1.5 ×.
//! The critical path in commands (`tests/fanout.rs` asserts it, with a 200 ms round
//! trip) does not grow with the units; the bench prints the one it observed in its last
//! run, which a loaded machine lengthens when it starts a step's exchanges more than
//! 20 ms apart. The fleets live in memory (`LatencyFleet`): one disk shared by 64
//! emulated units would queue their state writes, where real units each have their own.
//! The CPU time printed (client and emulated units together) is what real HSMs would
//! take off this machine.
//!
//! Run: `cargo bench -p tke-ceremony --bench fanout`. At the end it prints the medians
//! and ratios against the targets.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/fanout_sizes/mod.rs"]
mod fanout_sizes;

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use cpu_time::ProcessTime;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use fanout_sizes::{admins, on_every_instance, set_up, CEREMONIES, SIZES};
use tke_client::embedded::Latency;

/// The simulated round trip of every unit.
const LATENCY_MS: u64 = 20;

/// The largest ratio to the 2-unit time allowed, per size (by units).
const TARGETS: [(usize, f64); 2] = [(8, 1.2), (64, 1.5)];

/// What one size's runs gave.
struct Measured {
    ceremony: &'static str,
    units: usize,
    times: Vec<Duration>,
    /// CPU time of this process (client and emulated units) per run.
    cpu: Vec<Duration>,
    critical_path: usize,
}

fn bench(c: &mut Criterion) {
    let latency = Latency::from_millis(LATENCY_MS).unwrap();
    let admins = admins();
    let results: Mutex<Vec<Measured>> = Mutex::new(Vec::new());
    for ceremony in CEREMONIES {
        let name = ceremony.name;
        let mut g = c.benchmark_group(format!("fanout_{name}"));
        // One run per sample: a run takes a fresh fleet, and tenths of a second.
        g.sampling_mode(SamplingMode::Flat);
        g.sample_size(10);
        g.warm_up_time(Duration::from_millis(500));
        g.measurement_time(Duration::from_secs(3));
        for size in &SIZES {
            let mut measured = Measured {
                ceremony: name,
                units: size.units,
                times: Vec::new(),
                cpu: Vec::new(),
                critical_path: 0,
            };
            g.bench_function(BenchmarkId::from_parameter(size.name), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let fleet = size.fleet(latency);
                        set_up(&fleet, ceremony, &admins);
                        let (start, cpu) = (Instant::now(), ProcessTime::now());
                        on_every_instance(&fleet, ceremony.run, &admins);
                        let took = start.elapsed();
                        total += took;
                        measured.times.push(took);
                        measured.cpu.push(cpu.elapsed());
                        measured.critical_path = fleet.timeline.critical_path();
                    }
                    total
                })
            });
            results.lock().unwrap().push(measured);
        }
        g.finish();
    }
    report(&results.into_inner().unwrap());
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn report(results: &[Measured]) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "\nFan-out with a {LATENCY_MS} ms round trip per unit request (median of every run; CPU: \
         client and emulated units together, shared by {cores} core(s)):"
    );
    for m in results {
        let base = results
            .iter()
            .find(|b| b.ceremony == m.ceremony && b.units == SIZES[0].units)
            .map_or(Duration::ZERO, |b| median(&b.times));
        let ratio = median(&m.times).as_secs_f64() / base.as_secs_f64();
        let target = TARGETS.iter().find(|(u, _)| *u == m.units).map(|(_, t)| *t);
        let verdict = match target {
            Some(t) if ratio <= t => format!("; target <= {t}: met"),
            Some(t) => format!("; target <= {t}: NOT MET"),
            None => String::new(),
        };
        println!(
            "  {:<10} {:>3} units: {:>7.1} ms ({} runs, CPU {:.1} ms), {:.2} x {} units{verdict}; critical path {} commands",
            m.ceremony,
            m.units,
            median(&m.times).as_secs_f64() * 1000.0,
            m.times.len(),
            median(&m.cpu).as_secs_f64() * 1000.0,
            ratio,
            SIZES[0].units,
            m.critical_path,
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
