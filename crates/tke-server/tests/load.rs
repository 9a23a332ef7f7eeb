//! A bounded load test on loopback: 1,000 concurrent queries and 100 concurrent signed
//! commands against one tke-unitd, then the same queries again to see that the server's
//! memory stays put. Counts are fixed, every client has timeouts, and the test stops by
//! itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    sync::{Barrier, Mutex},
    time::Instant,
};

use common::*;
use tke_client::{Client, ClientError, KnownUnit};
use tke_proto::{Command, ModuleError};

const QUERIES: usize = 1000;
const COMMANDS: usize = 100;
const UNITS: usize = 4;

/// `n` concurrent queries (one thread each, released together), spread over the units.
/// Every answer is authenticated by the client; returns the failures.
fn queries(client: &Client, n: usize) -> Vec<String> {
    let failures = Mutex::new(Vec::new());
    let barrier = Barrier::new(n);
    std::thread::scope(|s| {
        for i in 0..n {
            let (client, failures, barrier) = (client, &failures, &barrier);
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn_scoped(s, move || {
                    let u: &KnownUnit = &client.units()[i % client.units().len()];
                    barrier.wait();
                    match client.query(u) {
                        Ok(st) if st.unit_id == u.id() && !st.imprint_mode() => {}
                        Ok(st) => failures
                            .lock()
                            .unwrap()
                            .push(format!("query {i}: unexpected status {st:?}")),
                        Err(e) => failures.lock().unwrap().push(format!("query {i}: {e}")),
                    }
                })
                .unwrap();
        }
    });
    failures.into_inner().unwrap()
}

#[test]
fn a_thousand_concurrent_queries_and_a_hundred_signed_commands_are_all_answered() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("srv");
    let port = free_port();
    init(
        &dir,
        port,
        &["--operational", &UNITS.to_string(), "--recovery", "0"],
    );
    let server = ServerProc::start(&dir, port);
    let client = client(&server);
    let alice = MemSigner::new("alice");
    set_up(&client, &alice);
    let before: Vec<u64> = client
        .units()
        .iter()
        .map(|u| client.query(u).unwrap().counter)
        .collect();
    assert!(queries(&client, 100).is_empty(), "warm-up");

    let started = Instant::now();
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let (client, alice, failures) = (&client, &alice, &failures);
        // 100 signed commands at once, 25 per unit: the client holds each unit's lock
        // from the counter query to the answer, so each unit sees them in counter order.
        for i in 0..COMMANDS {
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn_scoped(s, move || {
                    let u = &client.units()[i % UNITS];
                    if let Err(e) = client.run(u, &Command::ClearNew, &[alice]) {
                        failures.lock().unwrap().push(format!("command {i}: {e}"));
                    }
                })
                .unwrap();
        }
        // ... while 1,000 queries arrive together.
        let f = queries(client, QUERIES);
        failures.lock().unwrap().extend(f);
    });
    let elapsed = started.elapsed();
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // Counters: exactly one step per command on each unit.
    for (u, b) in client.units().iter().zip(&before) {
        assert_eq!(
            client.query(u).unwrap().counter,
            b + (COMMANDS / UNITS) as u64,
            "unit {}",
            u.num
        );
    }
    eprintln!("{QUERIES} queries + {COMMANDS} commands in {elapsed:?}");

    // Memory: another full round of queries does not grow the server.
    let rss1 = server.rss_kib();
    assert!(queries(&client, QUERIES).is_empty());
    let rss2 = server.rss_kib();
    eprintln!("server RSS: {rss1} KiB after the first round, {rss2} KiB after the second");
    assert!(
        rss2 <= rss1 + 16 * 1024,
        "the server grew from {rss1} KiB to {rss2} KiB on a repeated round"
    );
    assert!(!server.logs().contains("panicked"));
}

#[test]
fn clients_racing_for_one_unit_are_serialized_by_the_unit() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("srv");
    let port = free_port();
    init(&dir, port, &["--operational", "1", "--recovery", "0"]);
    let server = ServerProc::start(&dir, port);
    let alice = MemSigner::new("alice");
    let first = client(&server);
    set_up(&first, &alice);
    let before = first.query(&first.units()[0]).unwrap().counter;
    // Ten independent workstations (no shared lock) send a command to the same unit at
    // the same moment: each read the same counter, so the unit runs one per counter
    // value and refuses the rest with 163. Nothing runs twice, nothing is lost.
    let clients: Vec<Client> = (0..10).map(|_| client(&server)).collect();
    let barrier = Barrier::new(clients.len());
    let results: Vec<Result<Vec<u8>, ClientError>> = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter()
            .map(|c| {
                let (barrier, alice) = (&barrier, &alice);
                s.spawn(move || {
                    barrier.wait();
                    c.run(&c.units()[0], &Command::ClearNew, &[alice])
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(ok >= 1);
    for r in &results {
        if let Err(e) = r {
            assert!(
                matches!(e, ClientError::Module { error, .. } if *error == ModuleError::INVALID_COUNTER),
                "{e}"
            );
        }
    }
    assert_eq!(
        first.query(&first.units()[0]).unwrap().counter,
        before + ok as u64
    );
}
