//! Signed-command round trip over loopback HTTPS, p50 and p99.
//!
//! Figure to reach: p99 of a signed command (query for the counter, sign, submit, verify
//! the signed answer) under 50 ms on loopback.
//!
//! `cargo bench --bench roundtrip` measures 500 of each; under `cargo test` (no `--bench`
//! argument) it runs 20 as a smoke test.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use tke_proto::{Command, Threshold};
use tke_sigkey::Signer as _;
use tke_test_support::{server::*, MemSigner};

fn percentiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |p: f64| {
        let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
        v[i].as_secs_f64() * 1000.0
    };
    (at(0.50), at(0.99))
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 500 } else { 20 };
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("srv");
    let port = free_port();
    init(&dir, port, &["--operational", "1", "--recovery", "0"]);
    let server = ServerProc::start(&dir, port);
    let client = client(&server);
    let u = &client.units()[0];
    let alice = MemSigner::new("alice");
    let one = Threshold::new(1).unwrap();
    client
        .run(u, &Command::AddAdmin(alice.certificate().clone()), &[])
        .unwrap();
    client
        .run(
            u,
            &Command::SetThresholds {
                signature: one,
                revocation: one,
            },
            &[&alice],
        )
        .unwrap();
    for _ in 0..20 {
        client.run(u, &Command::ClearNew, &[&alice]).unwrap();
    }

    // 1. What a ceremony step costs: query the counter, sign, submit, verify.
    let mut run = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        client.run(u, &Command::ClearNew, &[&alice]).unwrap();
        run.push(t.elapsed());
    }
    // 2. The signed command's own exchange: one HTTPS request, executed and signed by the
    //    unit (state written durably), the answer verified.
    let mut submit = Vec::with_capacity(n);
    for _ in 0..n {
        let counter = client.query(u).unwrap().counter;
        let wire = Command::ClearNew.to_wire(u.id(), counter + 1).unwrap();
        let signed = tke_sigkey::sign_command(&wire, &[&alice]).unwrap();
        let t = Instant::now();
        client.submit(u, &signed).unwrap();
        submit.push(t.elapsed());
    }
    // 3. An authenticated status query.
    let mut query = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        client.query(u).unwrap();
        query.push(t.elapsed());
    }
    println!("loopback HTTPS, {n} samples each (tke-unitd, one unit, soft backend)");
    if !full {
        println!("  (smoke run under `cargo test`, not a measurement: use `cargo bench`)");
    }
    for (name, v) in [
        ("signed command: query + sign + submit", run),
        ("signed command: submit only", submit),
        ("status query", query),
    ] {
        let (p50, p99) = percentiles(v);
        println!("  {name:<40} p50 {p50:>7.2} ms   p99 {p99:>7.2} ms");
        if name.starts_with("signed command: query") {
            println!(
                "  target: p99 < 50 ms ... {}",
                if p99 < 50.0 { "met" } else { "NOT MET" }
            );
        }
    }
}
