//! `auto-init`, then `auto-mk-rotate`, wall time over HTTPS for an instance of 2 units vs 8 units vs 8 instances
//! of 8 units on 4 servers (64 units, every instance initialized at once), with the
//! administrators' keys already open (passwords preloaded), the units answering after a
//! simulated HSM round trip of 20 ms (`tke-unitd serve --latency-ms 20`).
//!
//! Figure to reach: the 8-unit run takes at most 1.2 × the 2-unit run, the 64-unit run at
//! most 1.5 ×, because per-unit steps fan out to every unit in parallel. Without the round trip the figure measured
//! this machine's cores more than the design: the client and every emulated unit share
//! them, where real units are separate HSMs. The same figure on the embedded fleet, up
//! to 64 units, is `tke-ceremony`'s `fanout` bench.
//!
//! The servers' directories are in memory (`/dev/shm`), as the embedded fleets of the
//! `fanout` bench. The bench also reports the CPU time each side used and the floor it sets: a run
//! cannot take less wall time than (client CPU + servers' CPU) / cores, however well the
//! steps fan out.
//!
//! `cargo bench --bench auto_init` takes the median of 5 runs of each; under `cargo test`
//! (no `--bench` argument) it runs each once as a smoke test.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tke_ceremony::{AutoInit, Event, Flow, Progress, Rotate, Silent};
use tke_test_support::{server::*, MemSigner};

/// The simulated round trip of every unit, in milliseconds.
const LATENCY_MS: &str = "20";

/// The largest ratio of the 8-unit time to the 2-unit time allowed.
const TARGET: f64 = 1.2;

/// The largest ratio of the 64-unit time (several servers) to the 2-unit time allowed.
const TARGET_64: f64 = 1.5;

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
use tke_client::{fanout::parallel, Client, Transport};
use tke_proto::{AdminInfo, Threshold};
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

/// Wall time, client CPU and server CPU of one ceremony.
struct Run {
    wall: Duration,
    client_cpu: Duration,
    server_cpu: Duration,
}

/// One fleet of `servers` tke-unitd processes, each made with `layout` and holding
/// `instances` instances (one API key each), every instance initialized at once, then
/// every instance's master key rotated at once (`auto-mk-rotate`, each instance's key
/// storage on its server, empty): the two runs.
fn one_run(admins: &[MemSigner], servers: usize, instances: usize, layout: &[&str]) -> (Run, Run) {
    // Each real unit has storage of its own: units of several servers on one disk would
    // queue their state writes behind each other.
    let d = tke_test_support::fanout::memory_tempdir();
    let mut procs = Vec::new();
    let mut endpoints = Vec::new();
    for i in 0..servers {
        let dir = d.path().join(format!("srv-{i}"));
        let port = free_port();
        init(&dir, port, layout);
        let server = ServerProc::start_with(&dir, port, &["--latency-ms", LATENCY_MS]);
        let ca = ca_of(&dir);
        for k in 1..=instances {
            let key = if instances == 1 {
                "api-key".to_owned()
            } else {
                format!("api-key-{k}")
            };
            let t: Arc<dyn Transport> = Arc::new(transport(&server.url(), &ca, &dir.join(key)));
            endpoints.push((t, ca.clone()));
        }
        procs.push(server);
    }
    let client = Client::connect(endpoints).unwrap();
    let signers: Vec<&dyn Signer> = admins.iter().map(|a| a as &dyn Signer).collect();
    let servers_cpu = || {
        procs
            .iter()
            .map(|p| server_cpu(p.child.id()))
            .sum::<Duration>()
    };
    let (cpu0, srv0) = (own_cpu(), servers_cpu());
    let t = Instant::now();
    let steps = Steps {
        start: t,
        seen: std::sync::Mutex::new(Vec::new()),
    };
    let reports = parallel(&client.instances(), |instance| {
        AutoInit {
            instance: instance.clone(),
            sig_threshold: Threshold::new(2).unwrap(),
            rev_threshold: Threshold::new(2).unwrap(),
            admins: signers.clone(),
        }
        .plan(&client)
        .unwrap()
        .execute(&steps)
        .unwrap()
    });
    let elapsed = t.elapsed();
    let (cpu1, srv1) = (own_cpu(), servers_cpu());
    if std::env::var_os("TKE_BENCH_STEPS").is_some() {
        for (name, at) in steps.seen.into_inner().unwrap() {
            eprintln!(
                "    {:>4} units  {name:<14} at {:>6.1} ms",
                client.units().len(),
                at.as_secs_f64() * 1000.0
            );
        }
    }
    let initialized: usize = reports.iter().map(|r| r.units.len()).sum();
    assert_eq!(initialized, client.units().len());
    let init = Run {
        wall: elapsed,
        client_cpu: cpu1 - cpu0,
        server_cpu: srv1 - srv0,
    };

    let keys: Vec<AdminInfo> = admins.iter().map(MemSigner::admin_info).collect();
    let (cpu0, srv0) = (own_cpu(), servers_cpu());
    let t = Instant::now();
    let rotated = parallel(&client.instances(), |instance| {
        Rotate {
            flow: Flow::Auto,
            units: client.instance_units(instance),
            keys: keys.clone(),
            resume: false,
        }
        .plan(&client)
        .unwrap()
        .execute(&signers, &Silent)
        .unwrap()
    });
    let elapsed = t.elapsed();
    let (cpu1, srv1) = (own_cpu(), servers_cpu());
    assert!(rotated.iter().all(|r| r.from != r.to));
    let rotate = Run {
        wall: elapsed,
        client_cpu: cpu1 - cpu0,
        server_cpu: srv1 - srv0,
    };
    (init, rotate)
}

fn median(v: &[Run], f: impl Fn(&Run) -> Duration) -> Duration {
    let mut v: Vec<Duration> = v.iter().map(f).collect();
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A fleet size: its units, its servers, the instances per server and the layout of each.
struct Size {
    units: usize,
    servers: usize,
    instances: usize,
    layout: &'static [&'static str],
    /// The largest ratio to the 2-unit time allowed.
    target: Option<f64>,
}

const SIZES: [Size; 3] = [
    Size {
        units: 2,
        servers: 1,
        instances: 1,
        layout: &["--operational", "1", "--recovery", "1"],
        target: None,
    },
    Size {
        units: 8,
        servers: 1,
        instances: 1,
        layout: &["--operational", "3", "--recovery", "2", "--failover", "3"],
        target: Some(TARGET),
    },
    // 8 instances of 8 units on 4 servers (an instance has at most 11 units).
    Size {
        units: 64,
        servers: 4,
        instances: 2,
        layout: &["--instances", "2", "--operational", "6", "--recovery", "2"],
        target: Some(TARGET_64),
    },
];

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let reps = if full { 5 } else { 1 };
    let admins = [
        MemSigner::new("alice"),
        MemSigner::new("bob"),
        MemSigner::new("carol"),
    ];
    let mut init: Vec<Vec<Run>> = SIZES.iter().map(|_| Vec::new()).collect();
    let mut rotate: Vec<Vec<Run>> = SIZES.iter().map(|_| Vec::new()).collect();
    for _ in 0..reps {
        for ((size, i), r) in SIZES.iter().zip(&mut init).zip(&mut rotate) {
            let (a, b) = one_run(&admins, size.servers, size.instances, size.layout);
            i.push(a);
            r.push(b);
        }
    }
    if !full {
        println!("(smoke run under `cargo test`, not a measurement: use `cargo bench`)");
    }
    report("auto-init", &init, reps);
    report("auto-mk-rotate (after the auto-init)", &rotate, reps);
}

fn report(ceremony: &str, runs: &[Vec<Run>], reps: usize) {
    println!(
        "{ceremony} over loopback HTTPS, units answering after {LATENCY_MS} ms, 3 administrators, thresholds 2/2, every instance at once, {reps} run(s) each"
    );
    let m2 = median(&runs[0], |r| r.wall);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (size, runs) in SIZES.iter().zip(runs) {
        let m = median(runs, |r| r.wall);
        let walls: Vec<String> = runs.iter().map(|r| format!("{:.1}", ms(r.wall))).collect();
        let cpu = median(runs, |r| r.client_cpu) + median(runs, |r| r.server_cpu);
        println!(
            "  {} units on {} server(s): median {:>6.1} ms wall (runs: {} ms); CPU: client {:.1} ms, servers {:.1} ms; CPU floor on {cores} core(s) {:.2} x the 2-unit run",
            size.units,
            size.servers,
            ms(m),
            walls.join(", "),
            ms(median(runs, |r| r.client_cpu)),
            ms(median(runs, |r| r.server_cpu)),
            cpu.as_secs_f64() / cores as f64 / m2.as_secs_f64(),
        );
        if let Some(target) = size.target {
            let ratio = m.as_secs_f64() / m2.as_secs_f64();
            println!(
                "    ratio {}/2 = {ratio:.2}; target <= {target} ... {}",
                size.units,
                if ratio <= target { "met" } else { "NOT MET" }
            );
        }
    }
}
