//! Signed commands per second under 8 concurrent clients against one `tke-unitd` with 8
//! soft units, one client thread per unit, over loopback HTTPS: the file store
//! (`--state-store file`: each command rewrites `unit.json` atomically) against the journal
//! with group commit (the default), same server directory, same run.
//!
//! Each client sends signed `clearNew` commands (query the counter once, then sign,
//! submit, verify the signed answer). `cargo bench -p tke-server --bench state_store`
//! sends 200 per client in each of 5 rounds per store, the stores alternated, and prints
//! the medians with the server's CPU time per command; under `cargo test` (no `--bench`
//! argument) one round of 5, as a smoke test. Figures in `docs/unit-persistence.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use tke_proto::Command;

const CLIENTS: usize = 8;

/// CPU time (user + system) the process `pid` used so far, from `/proc`.
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name (in parentheses, which may hold spaces).
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // utime and stime (fields 14 and 15 of proc(5)), in clock ticks of 1/100 s.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// One run of one store.
struct Run {
    /// Commands per second.
    rate: f64,
    /// The server's CPU time per command.
    cpu: Duration,
    /// The server's log after a graceful stop.
    log: String,
}

/// Serves `dir` with `store`, runs `n` commands per client.
fn measure(dir: &std::path::Path, port: u16, store: &str, n: usize, alice: &MemSigner) -> Run {
    let server = ServerProc::start_with(dir, port, &["--state-store", store]);
    let client = client(&server);
    assert_eq!(client.units().len(), CLIENTS);
    // Warm up: each unit's counter known, connections open.
    for u in client.units() {
        client.run(u, &Command::ClearNew, &[alice]).unwrap();
    }
    let (start, cpu_before) = (Instant::now(), cpu(server.child.id()));
    std::thread::scope(|s| {
        for u in client.units() {
            let client = &client;
            s.spawn(move || {
                for _ in 0..n {
                    client.run(u, &Command::ClearNew, &[alice]).unwrap();
                }
            });
        }
    });
    let (took, cpu_used) = (start.elapsed(), cpu(server.child.id()) - cpu_before);
    let log = server.log.clone();
    server.stop();
    let commands = (CLIENTS * n) as u32;
    Run {
        rate: f64::from(commands) / took.max(Duration::from_micros(1)).as_secs_f64(),
        cpu: cpu_used / commands,
        log: std::fs::read_to_string(log).unwrap_or_default(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (n, rounds) = if full { (200, 5) } else { (5, 1) };
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = d.path().join("srv");
    let port = free_port();
    init(&dir, port, &["--operational", "6", "--recovery", "2"]);
    let alice = MemSigner::new("alice");
    {
        let server = ServerProc::start(&dir, port);
        set_up(&client(&server), &alice);
        server.stop();
    }
    // Alternated, so that the load of a shared machine weighs on both alike.
    let (mut file, mut journal) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        file.push(measure(&dir, port, "file", n, &alice));
        journal.push(measure(&dir, port, "journal", n, &alice));
    }
    println!(
        "tke-unitd, {CLIENTS} units, {CLIENTS} concurrent clients, {n} signed commands each, \
         {rounds} alternated round(s) per store (medians)"
    );
    for (name, runs) in [
        ("file store:           ", &file),
        ("journal, group commit:", &journal),
    ] {
        println!(
            "  {name} {:8.0} commands/s, server CPU {:6.0} us per command   (rounds: {})",
            median(runs.iter().map(|r| r.rate).collect()),
            median(runs.iter().map(|r| r.cpu.as_secs_f64() * 1e6).collect()),
            runs.iter()
                .map(|r| format!("{:.0}", r.rate))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    for r in &journal {
        if let Some(line) = r.log.lines().find(|l| l.contains("journal compacted")) {
            println!("  {}", line.trim());
        }
    }
}
