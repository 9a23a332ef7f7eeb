//! `auto-init` wall time over HTTPS for an instance of 2 units vs 8 units, with the
//! administrators' keys already open (passwords preloaded), the units answering after a
//! simulated HSM round trip of 20 ms (`tke-unitd serve --latency-ms 20`).
//!
//! Figure to reach: the 8-unit run takes at most 1.2 × the 2-unit run, because per-unit
//! steps fan out to every unit in parallel. Without the round trip the figure measured
//! this machine's cores more than the design: the client and every emulated unit share
//! them, where real units are separate HSMs. The same figure on the embedded fleet, up
//! to 64 units, is `tke-ceremony`'s `fanout` bench.
//!
//! The bench also reports the CPU time each side used and the floor it sets: an 8-unit
//! run cannot take less wall time than (client CPU + server CPU) / cores, however well
//! the steps fan out.
//!
//! `cargo bench --bench auto_init` takes the median of 5 runs of each; under `cargo test`
//! (no `--bench` argument) it runs each once as a smoke test.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use tke_ceremony::{AutoInit, Event, Progress};
use tke_test_support::{server::*, MemSigner};

/// The simulated round trip of every unit, in milliseconds.
const LATENCY_MS: &str = "20";

/// The largest ratio of the 8-unit time to the 2-unit time allowed.
const TARGET: f64 = 1.2;

/// Records when each step of the ceremony began.
struct Steps {
    start: Instant,
    seen: std::sync::Mutex<Vec<(String, Duration)>>,
}

impl Progress for Steps {
    fn event(&self, e: &Event) {
        let name = match e {
            Event::InstallingAdmin { index, .. } => format!("admin {index}"),
            Event::SettingThresholds => "thresholds".into(),
            Event::GeneratingMasterKey => "generate".into(),
            Event::TransferringMasterKey { index, .. } => format!("transferred {index}"),
            _ => return,
        };
        self.seen.lock().unwrap().push((name, self.start.elapsed()));
    }
}
use tke_proto::Threshold;
use tke_sigkey::Signer;

/// CPU time used so far by this process (every thread, also those that ended).
fn own_cpu() -> Duration {
    cpu_time::ProcessTime::now().as_duration()
}

/// CPU time used so far by the threads of process `pid` (tke-unitd's threads live as long
/// as the server, so summing them is exact).
fn server_cpu(pid: u32) -> Duration {
    let mut ns = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let stat = std::fs::read_to_string(t.unwrap().path().join("schedstat")).unwrap();
        ns += stat
            .split_whitespace()
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap();
    }
    Duration::from_nanos(ns)
}

/// Wall time, client CPU and server CPU of one auto-init.
struct Run {
    wall: Duration,
    client_cpu: Duration,
    server_cpu: Duration,
}

fn one_run(admins: &[MemSigner], layout: &[&str]) -> Run {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("srv");
    let port = free_port();
    init(&dir, port, layout);
    let server = ServerProc::start_with(&dir, port, &["--latency-ms", LATENCY_MS]);
    let client = client(&server);
    let instance = client.instances()[0].clone();
    let signers: Vec<&dyn Signer> = admins.iter().map(|a| a as &dyn Signer).collect();
    let (cpu0, srv0) = (own_cpu(), server_cpu(server.child.id()));
    let t = Instant::now();
    let steps = Steps {
        start: t,
        seen: std::sync::Mutex::new(Vec::new()),
    };
    let report = AutoInit {
        instance,
        sig_threshold: Threshold::new(2).unwrap(),
        rev_threshold: Threshold::new(2).unwrap(),
        admins: signers,
    }
    .plan(&client)
    .unwrap()
    .execute(&steps)
    .unwrap();
    let elapsed = t.elapsed();
    let (cpu1, srv1) = (own_cpu(), server_cpu(server.child.id()));
    if std::env::var_os("TKE_BENCH_STEPS").is_some() {
        for (name, at) in steps.seen.into_inner().unwrap() {
            eprintln!(
                "    {:>4} units  {name:<14} at {:>6.1} ms",
                client.units().len(),
                at.as_secs_f64() * 1000.0
            );
        }
    }
    assert_eq!(report.units.len(), client.units().len());
    Run {
        wall: elapsed,
        client_cpu: cpu1 - cpu0,
        server_cpu: srv1 - srv0,
    }
}

fn median(v: &[Run], f: impl Fn(&Run) -> Duration) -> Duration {
    let mut v: Vec<Duration> = v.iter().map(f).collect();
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let reps = if full { 5 } else { 1 };
    let admins = [
        MemSigner::new("alice"),
        MemSigner::new("bob"),
        MemSigner::new("carol"),
    ];
    let two = ["--operational", "1", "--recovery", "1"];
    let eight = ["--operational", "3", "--recovery", "2", "--failover", "3"];
    let (mut t2, mut t8) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        t2.push(one_run(&admins, &two));
        t8.push(one_run(&admins, &eight));
    }
    let (m2, m8) = (median(&t2, |r| r.wall), median(&t8, |r| r.wall));
    let ratio = m8.as_secs_f64() / m2.as_secs_f64();
    println!(
        "auto-init over loopback HTTPS, units answering after {LATENCY_MS} ms, 3 administrators, thresholds 2/2, {reps} run(s) each"
    );
    if !full {
        println!("  (smoke run under `cargo test`, not a measurement: use `cargo bench`)");
    }
    for (n, runs, m) in [(2, &t2, m2), (8, &t8, m8)] {
        let walls: Vec<String> = runs.iter().map(|r| format!("{:.1}", ms(r.wall))).collect();
        println!(
            "  {n} units: median {:>6.1} ms wall (runs: {} ms); CPU: client {:.1} ms, server {:.1} ms",
            ms(m),
            walls.join(", "),
            ms(median(runs, |r| r.client_cpu)),
            ms(median(runs, |r| r.server_cpu)),
        );
    }
    println!(
        "  ratio 8/2 = {ratio:.2}; target <= {TARGET} ... {}",
        if ratio <= TARGET { "met" } else { "NOT MET" }
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu8 = median(&t8, |r| r.client_cpu) + median(&t8, |r| r.server_cpu);
    let floor = cpu8.as_secs_f64() / cores as f64;
    println!(
        "  CPU floor of the 8-unit run on {cores} core(s): {:.1} ms = {:.2} x the 2-unit run",
        floor * 1000.0,
        floor / m2.as_secs_f64()
    );
}
