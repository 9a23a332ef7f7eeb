//! The units' state journal of `tke-unitd` (group commit): a server killed with SIGKILL
//! in the middle of many concurrent signed commands restarts with every answered command
//! in its units' states and each one's record in its unit's audit log (carried in the
//! journal with the state, the log's tail restored from it); a stop compacts the journal into the unit files, which the file
//! store then serves; a damaged journal or an unknown store kind is refused, naming it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    fs,
    process::{Command as Process, Stdio},
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use common::*;
use tke_client::Client;
use tke_proto::{audit::verify_chain, Command, CommandId};
use tke_sigkey::Signer as _;
use tke_test_support::cli::snap::assert_run;

/// Units of the server: 6 operational and 2 recovery, one client thread each.
const UNITS: usize = 8;

/// The number in ` key=N` of the last log line that has it.
fn logged(logs: &str, key: &str) -> Option<u64> {
    logs.lines().rev().find_map(|l| {
        let at = l.find(&format!(" {key}="))?;
        l[at + key.len() + 2..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    })
}

/// The log of the server's last start.
fn last_log(server: &Server) -> String {
    let path = (1..)
        .map(|n| server.dir.join(format!("unitd-{n}.log")))
        .take_while(|l| l.exists())
        .last()
        .unwrap();
    fs::read_to_string(path).unwrap()
}

/// Each unit's counter after `set_up`: the commands below alternate AddAdmin(bob) and
/// RemoveAdmin(bob), so a unit holds bob exactly when an odd number of them ran.
struct Expect {
    base: Vec<u64>,
    /// The last counter each unit answered to its client.
    acked: Vec<AtomicU64>,
}

impl Expect {
    fn command(&self, unit: usize, counter: u64, bob: &MemSigner) -> Command {
        if (counter - self.base[unit]).is_multiple_of(2) {
            Command::AddAdmin(bob.certificate().clone())
        } else {
            Command::RemoveAdmin(bob.certificate().ski())
        }
    }

    /// Every answered command is in the state, and the state is the one its counter says;
    /// the audit log holds a record for each counter, chained up to the head the unit
    /// signs, the last one for the state's command. The counters go on from the state: a
    /// command that ran but whose answer was lost counts.
    fn check(&self, client: &Client, bob: &MemSigner) {
        for (i, u) in client.units().iter().enumerate() {
            let status = client.query(u).unwrap();
            let acked = self.acked[i].load(Ordering::SeqCst);
            // One command per unit at most was in flight, unanswered, when it died.
            assert!(
                status.counter == acked || status.counter == acked + 1,
                "unit {i}: counter {} after the restart, {acked} answered",
                status.counter
            );
            let has_bob = status
                .admins
                .iter()
                .any(|a| a.ski == bob.certificate().ski());
            assert_eq!(
                has_bob,
                (status.counter - self.base[i]) % 2 == 1,
                "unit {i} at counter {}",
                status.counter
            );
            let log = client.audit(u, 0).unwrap();
            let records = verify_chain(&log)
                .unwrap_or_else(|e| panic!("unit {i} at counter {}: {e}", status.counter));
            let last = records.last().unwrap();
            assert_eq!(
                (records.len() as u64, last.counter),
                (status.counter, status.counter),
                "unit {i}: one record per command"
            );
            if status.counter > self.base[i] {
                let expected = match self.command(i, status.counter - 1, bob) {
                    Command::AddAdmin(_) => CommandId::AddAdmin,
                    _ => CommandId::RemoveAdmin,
                };
                assert_eq!(last.command, expected, "unit {i}");
            }
            self.acked[i].store(status.counter, Ordering::SeqCst);
        }
    }
}

/// One thread per unit sends commands as fast as answers come, until the server dies or
/// `stop` commands were answered in all; returns how many were answered.
fn hammer(
    client: &Client,
    expect: &Expect,
    alice: &MemSigner,
    bob: &MemSigner,
    stop: usize,
) -> usize {
    let answered = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for (i, u) in client.units().iter().enumerate() {
            let answered = &answered;
            s.spawn(move || loop {
                let counter = expect.acked[i].load(Ordering::SeqCst);
                let command = expect.command(i, counter, bob);
                match client.run_counted(u, &command, &[alice], counter) {
                    Ok(_) => {
                        expect.acked[i].store(counter + 1, Ordering::SeqCst);
                        if answered.fetch_add(1, Ordering::SeqCst) + 1 >= stop {
                            return;
                        }
                    }
                    // The server was killed: the answer never came.
                    Err(_) => return,
                }
            });
        }
    });
    answered.into_inner()
}

#[test]
fn a_server_killed_amid_concurrent_commands_restarts_with_every_answered_command() {
    let d = tempfile::tempdir().unwrap();
    let mut server = Server::init(d.path(), "srv", &["--operational", "6", "--recovery", "2"]);
    server.start();
    let (alice, bob) = (MemSigner::new("alice"), MemSigner::new("bob"));
    let ca = ca_of(&server.dir);
    let key = server.dir.join("api-key");
    let connect = |url: &str| {
        let t: std::sync::Arc<dyn tke_client::Transport> =
            std::sync::Arc::new(transport(url, &ca, &key));
        Client::connect(vec![(t, ca.clone())]).unwrap()
    };
    let client = connect(&server.url());
    assert_eq!(client.units().len(), UNITS);
    set_up(&client, &alice);
    let base: Vec<u64> = client
        .units()
        .iter()
        .map(|u| client.query(u).unwrap().counter)
        .collect();
    let expect = Expect {
        acked: base.iter().map(|c| AtomicU64::new(*c)).collect(),
        base,
    };

    for round in 0..3 {
        // Killed while every unit has a command in flight.
        let answered = std::thread::scope(|s| {
            let worker = s.spawn(|| hammer(&client, &expect, &alice, &bob, usize::MAX));
            let start = Instant::now();
            let total = || {
                expect
                    .acked
                    .iter()
                    .map(|a| a.load(Ordering::SeqCst))
                    .sum::<u64>()
            };
            let before = total();
            while total() < before + 400 && start.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(5));
            }
            server.kill();
            worker.join().unwrap()
        });
        assert!(
            answered >= 400,
            "round {round}: {answered} commands answered"
        );

        server.start();
        let logs = last_log(&server);
        assert!(
            logs.contains("unit states: journal with group commit"),
            "{logs}"
        );
        // The kill left the records in the journal (no compaction since the last start):
        // the restart replayed them into the unit files.
        let replayed = logged(&logs, "replayed_records").unwrap();
        assert!(
            replayed >= answered as u64,
            "round {round}: {replayed} replayed\n{logs}"
        );
        let client = connect(&server.url());
        expect.check(&client, &bob);
        eprintln!("round {round}: {answered} commands answered, {replayed} records replayed");
    }

    // A graceful stop compacts: the unit files alone hold the states, and the file store
    // serves them.
    let client = connect(&server.url());
    assert!(hammer(&client, &expect, &alice, &bob, 40) >= 40);
    server.stop();
    // Group commit: the 8 clients' commands shared flushes.
    let logs = last_log(&server);
    assert!(
        logs.contains("journal compacted into the unit files"),
        "{logs}"
    );
    let (records, flushes) = (
        logged(&logs, "records").unwrap(),
        logged(&logs, "flushes").unwrap(),
    );
    assert!(
        records >= 40 && flushes < records,
        "{records} records in {flushes} flushes"
    );
    eprintln!("after the last restart: {records} records in {flushes} fdatasyncs");
    let journal = server.dir.join("units").join(tke_unit::JOURNAL_FILE);
    assert_eq!(fs::read(&journal).unwrap(), b"TKEJRNL1", "an empty journal");
    let file_store = ServerProc::start_with(&server.dir, server.port, &["--state-store", "file"]);
    assert!(file_store.logs().contains("unit states: one file per unit"));
    assert!(
        !journal.exists(),
        "the file store folds and removes the journal"
    );
    expect.check(&connect(&file_store.url()), &bob);
}

#[test]
fn a_damaged_journal_or_an_unknown_store_is_refused_and_named() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let dir = root.join("srv");
    let port = free_port();
    init(&dir, port, &["--operational", "1", "--recovery", "0"]);
    let serve = |extra: &[&str]| {
        Process::new(UNITD)
            .arg("serve")
            .arg("--config")
            .arg(dir.join("unitd.toml"))
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    assert_run(
        "serve_state_store_unknown",
        &serve(&["--state-store", "sqlite"]),
        2,
        &[(root, "[ROOT]")],
    );

    // Two whole records, the first garbled: damage, not a torn tail.
    let journal = dir.join("units").join(tke_unit::JOURNAL_FILE);
    let record = |unit: u8| {
        let mut r = vec![17, 0, 0, 0];
        r.extend_from_slice(&[0; 8]);
        r.push(1);
        r.extend_from_slice(&[unit; 16]);
        r
    };
    let mut bytes = b"TKEJRNL1".to_vec();
    bytes.extend(record(1));
    bytes.extend(record(2));
    fs::write(&journal, &bytes).unwrap();
    assert_run("serve_journal_damaged", &serve(&[]), 1, &[(root, "[ROOT]")]);
    assert_eq!(fs::read(&journal).unwrap(), bytes, "left as it was");
}
