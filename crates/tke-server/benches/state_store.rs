//! Signed commands per second under 8 concurrent clients against one `tke-unitd` with 8
//! soft units, one client thread per unit, over loopback HTTPS: the file store
//! (`--state-store file`: each command rewrites `unit.json` atomically) against the journal
//! with group commit (the default), same server directory, same run.
//!
//! Each client sends signed `clearNew` commands (query the counter once, then sign,
//! submit, verify the signed answer). `cargo bench -p tke-server --bench state_store`
//! sends 200 per client and store; under `cargo test` (no `--bench` argument) 5, as a
//! smoke test. Figures in `docs/unit-persistence.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use tke_proto::Command;

const CLIENTS: usize = 8;

/// Serves `dir` with `store`, runs `n` commands per client, returns commands per second
/// and the server's log after a graceful stop.
fn measure(
    dir: &std::path::Path,
    port: u16,
    store: &str,
    n: usize,
    alice: &MemSigner,
) -> (f64, String) {
    let server = ServerProc::start_with(dir, port, &["--state-store", store]);
    let client = client(&server);
    assert_eq!(client.units().len(), CLIENTS);
    // Warm up: each unit's counter known, connections open.
    for u in client.units() {
        client.run(u, &Command::ClearNew, &[alice]).unwrap();
    }
    let start = Instant::now();
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
    let took = start.elapsed();
    let log = server.log.clone();
    server.stop();
    let rate = (CLIENTS * n) as f64 / took.max(Duration::from_micros(1)).as_secs_f64();
    (rate, std::fs::read_to_string(log).unwrap_or_default())
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 200 } else { 5 };
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
    let (file, _) = measure(&dir, port, "file", n, &alice);
    let (journal, log) = measure(&dir, port, "journal", n, &alice);
    println!("tke-unitd, {CLIENTS} units, {CLIENTS} concurrent clients, {n} signed commands each");
    println!("  file store:             {file:8.0} commands/s");
    println!(
        "  journal, group commit:  {journal:8.0} commands/s ({:.2}x)",
        journal / file
    );
    if let Some(line) = log.lines().find(|l| l.contains("journal compacted")) {
        println!("  {}", line.trim());
    }
}
