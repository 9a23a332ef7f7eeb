//! `auto-init` wall time over HTTPS for an instance of 2 units vs 8 units, with the
//! administrators' keys already open (passwords preloaded).
//!
//! Figure to reach: the 8-unit run takes at most 1.5 × the 2-unit run, because per-unit
//! steps fan out to every unit in parallel.
//!
//! `cargo bench --bench auto_init` takes the median of 5 runs of each; under `cargo test`
//! (no `--bench` argument) it runs each once as a smoke test.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use tke_ceremony::{AutoInit, Event, Progress};

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

fn one_run(admins: &[MemSigner], layout: &[&str]) -> Duration {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("srv");
    let port = free_port();
    init(&dir, port, layout);
    let server = ServerProc::start(&dir, port);
    let client = client(&server);
    let instance = client.instances()[0].clone();
    let signers: Vec<&dyn Signer> = admins.iter().map(|a| a as &dyn Signer).collect();
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
    elapsed
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
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
    let (m2, m8) = (median(t2.clone()), median(t8.clone()));
    let ratio = m8.as_secs_f64() / m2.as_secs_f64();
    println!("auto-init over loopback HTTPS, 3 administrators, thresholds 2/2, {reps} run(s) each");
    if !full {
        println!("  (smoke run under `cargo test`, not a measurement: use `cargo bench`)");
    }
    println!(
        "  2 units: median {:>8.1} ms  (runs: {:?})",
        m2.as_secs_f64() * 1000.0,
        t2
    );
    println!(
        "  8 units: median {:>8.1} ms  (runs: {:?})",
        m8.as_secs_f64() * 1000.0,
        t8
    );
    println!(
        "  ratio 8/2 = {ratio:.2}; target <= 1.5 ... {}",
        if ratio <= 1.5 { "met" } else { "NOT MET" }
    );
}
