//! The audit log: one record per command that consumed the counter, chained by hashes,
//! served by the signed audit query, kept by zeroize, and committed with the state in both
//! state stores (a crash between the log's write and the state's loses neither).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    fs, io,
    panic::{catch_unwind, AssertUnwindSafe},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use support::{admins, fails, init, ok, query, run, run_at, send, Fleet, MemSigner};
use tke_proto::{
    audit::{verify_chain, AuditLog, AuditTamper},
    AuditPage, AuditQuery, AuditRecord, CaCertificate, Command, CommandId, ModuleError, Request,
    Ski, UnitId, UnitType, MAX_AUDIT_PAGE,
};
use tke_sigkey::Signer as _;
use tke_unit::{FileStore, Journal, JournalOptions, StateStore, Unit, AUDIT_FILE};

/// Fetches the log from `from` on, page by page, as a client does.
fn fetch(unit: &mut Unit, ca: &CaCertificate, from: u64) -> AuditLog {
    let mut log: Option<AuditLog> = None;
    let mut next = from;
    loop {
        let body = send(unit, ca, &Request::Audit(AuditQuery::new(unit.id(), next)));
        assert_eq!(body.error(), None);
        let page = AuditPage::decode_checked(body.output.as_bytes()).unwrap();
        let n = page.records.len();
        let log = log.get_or_insert_with(|| AuditLog {
            counter: body.counter,
            first: page.first,
            head: page.head,
            start: from.max(page.first),
            prev: page.prev,
            records: Vec::new(),
        });
        log.counter = body.counter;
        log.head = page.head;
        log.records
            .extend(page.records.iter().map(|r| r.as_bytes().to_vec()));
        next = log.start + log.records.len() as u64;
        if n < MAX_AUDIT_PAGE {
            break;
        }
    }
    log.unwrap()
}

fn verified(unit: &mut Unit, ca: &CaCertificate, from: u64) -> Vec<AuditRecord> {
    verify_chain(&fetch(unit, ca, from)).unwrap()
}

fn skis(signers: &[&MemSigner]) -> Vec<Ski> {
    let mut v: Vec<Ski> = signers.iter().map(|s| s.certificate().ski()).collect();
    v.sort();
    v
}

/// A new operational unit in `root`, in a directory named by its id (as `tke-unitd`
/// keeps them, so that a journal in `root` may hold its state).
fn new_unit(fleet: &Fleet, root: &Path) -> (std::path::PathBuf, Unit) {
    let id = UnitId::random();
    let ty = UnitType::Operational;
    let dir = root.join(id.uuid());
    let unit =
        Unit::create_soft(&dir, id, ty, &fleet.ca, &mut |pk| fleet.issue(id, ty, pk)).unwrap();
    (dir, unit)
}

#[test]
fn each_executed_command_is_recorded_with_its_signers_and_zeroize_keeps_the_log() {
    let fleet = Fleet::new("audit");
    let root = tempfile::tempdir().unwrap();
    let (dir, mut unit) = new_unit(&fleet, root.path());
    assert!(
        verified(&mut unit, &fleet.ca, 0).is_empty(),
        "a new unit has no record"
    );
    let a = admins(3);
    init(&mut unit, &fleet.ca, &a, 2, 2);
    // Refused before the counter: not run, not recorded.
    fails(
        &run(&mut unit, &fleet.ca, &Command::ClearNew, &[]),
        ModuleError::NOT_ENOUGH_SIGNATURES,
    );
    fails(
        &run_at(&mut unit, &fleet.ca, &Command::ClearNew, 99, &[&a[0]]),
        ModuleError::INVALID_COUNTER,
    );
    // Refused by the unit's rules once authorized: the counter is used, and recorded.
    let rm = Command::SetThresholds {
        signature: tke_proto::Threshold::new(3).unwrap(),
        revocation: tke_proto::Threshold::new(3).unwrap(),
    };
    ok(run(&mut unit, &fleet.ca, &rm, &[&a[2], &a[0]]));
    fails(
        &run(
            &mut unit,
            &fleet.ca,
            &Command::RemoveAdmin(a[1].certificate().ski()),
            &[&a[0], &a[1], &a[2]],
        ),
        ModuleError::REMOVAL_BELOW_THRESHOLD,
    );
    ok(run(&mut unit, &fleet.ca, &Command::Zeroize, &[&a[1]]));
    assert_eq!(query(&mut unit, &fleet.ca).admins.len(), 0);

    let records = verified(&mut unit, &fleet.ca, 0);
    let got: Vec<(u64, CommandId, Vec<Ski>, u32, u32)> = records
        .iter()
        .map(|r| {
            (
                r.counter,
                r.command,
                r.signers.clone(),
                r.return_code,
                r.reason_code,
            )
        })
        .collect();
    let refused = ModuleError::REMOVAL_BELOW_THRESHOLD;
    assert_eq!(
        got,
        vec![
            (1, CommandId::AddAdmin, vec![], 0, 0),
            (2, CommandId::AddAdmin, vec![], 0, 0),
            (3, CommandId::AddAdmin, vec![], 0, 0),
            (4, CommandId::SetThresholds, skis(&[&a[0], &a[1]]), 0, 0),
            (5, CommandId::SetThresholds, skis(&[&a[0], &a[2]]), 0, 0),
            (
                6,
                CommandId::RemoveAdmin,
                skis(&[&a[0], &a[1], &a[2]]),
                refused.rc,
                refused.reason
            ),
            (7, CommandId::Zeroize, skis(&[&a[1]]), 0, 0),
        ]
    );
    // From a counter on: the unit gives the previous record's hash, which checks.
    let tail = verified(&mut unit, &fleet.ca, 5);
    assert_eq!(tail, records[4..]);
    assert!(verified(&mut unit, &fleet.ca, 8).is_empty());
    // Reopened, the unit serves the same log, and the file is private.
    drop(unit);
    let mut unit = Unit::open(&dir).unwrap();
    assert_eq!(verified(&mut unit, &fleet.ca, 0), records);
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(dir.join(AUDIT_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn pages_hold_at_most_the_protocol_limit_and_chain_across_pages() {
    let fleet = Fleet::new("audit pages");
    let root = tempfile::tempdir().unwrap();
    let mut unit = new_unit(&fleet, root.path()).1;
    let a = admins(1);
    init(&mut unit, &fleet.ca, &a, 1, 1);
    for _ in 0..MAX_AUDIT_PAGE {
        ok(run(&mut unit, &fleet.ca, &Command::ClearNew, &[&a[0]]));
    }
    let q = Request::Audit(AuditQuery::new(unit.id(), 1));
    let body = send(&mut unit, &fleet.ca, &q);
    let page = AuditPage::decode_checked(body.output.as_bytes()).unwrap();
    assert_eq!(page.records.len(), MAX_AUDIT_PAGE);
    let records = verified(&mut unit, &fleet.ca, 0);
    assert_eq!(records.len(), MAX_AUDIT_PAGE + 2);
    assert_eq!(records.last().unwrap().counter, unit.status().counter);
}

/// Lines of the log file, each the hex of one record.
fn lines(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join(AUDIT_FILE))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(dir: &Path, lines: &[String]) {
    fs::write(
        dir.join(AUDIT_FILE),
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

#[test]
fn an_edited_a_removed_or_a_cut_record_on_disk_is_detected() {
    let fleet = Fleet::new("audit tamper");
    let root = tempfile::tempdir().unwrap();
    let (dir, mut unit) = new_unit(&fleet, root.path());
    init(&mut unit, &fleet.ca, &admins(2), 1, 1);
    drop(unit);
    let good = lines(&dir);
    assert_eq!(good.len(), 3);
    let check = |edit: &dyn Fn(&mut Vec<String>), expected: AuditTamper| {
        let mut l = good.clone();
        edit(&mut l);
        write_lines(&dir, &l);
        let mut unit = Unit::open(&dir).unwrap();
        let log = fetch(&mut unit, &fleet.ca, 0);
        assert_eq!(verify_chain(&log), Err(expected));
    };
    // One field of record 2 (its time, the record's last-but-one field) changed.
    let edit_time = |l: &mut Vec<String>| {
        let mut r = AuditRecord::decode_checked(&hex::decode(&l[1]).unwrap()).unwrap();
        r.time += 1;
        l[1] = hex::encode(tke_proto::der::Encode::to_der(&r).unwrap());
    };
    check(&edit_time, AuditTamper::Edited { counter: 3 });
    check(
        &|l: &mut Vec<String>| {
            let mut r = AuditRecord::decode_checked(&hex::decode(&l[2]).unwrap()).unwrap();
            r.signers.clear();
            l[2] = hex::encode(tke_proto::der::Encode::to_der(&r).unwrap());
        },
        AuditTamper::HeadMismatch { counter: 3 },
    );
    check(
        &|l: &mut Vec<String>| {
            l.remove(1);
        },
        AuditTamper::Gap {
            expected: 2,
            found: 3,
        },
    );
    check(
        &|l: &mut Vec<String>| {
            l.pop();
        },
        AuditTamper::Truncated {
            last: 2,
            counter: 3,
        },
    );
    check(
        &|l: &mut Vec<String>| l[0].replace_range(0..2, "zz"),
        AuditTamper::Undecodable { counter: 1 },
    );
    // Intact again: the log checks.
    write_lines(&dir, &good);
    let mut unit = Unit::open(&dir).unwrap();
    assert_eq!(verified(&mut unit, &fleet.ca, 0).len(), 3);
}

/// A store that panics on its next save while armed: a crash after the record's write
/// and before the state's.
#[derive(Debug)]
struct CrashingStore {
    inner: Box<dyn StateStore>,
    armed: Arc<AtomicBool>,
}

impl StateStore for CrashingStore {
    fn location(&self) -> &Path {
        self.inner.location()
    }
    fn load(&self) -> io::Result<Option<Vec<u8>>> {
        self.inner.load()
    }
    fn save(&mut self, record: &[u8]) -> io::Result<()> {
        if self.armed.swap(false, Ordering::SeqCst) {
            panic!("crash before the state is saved");
        }
        self.inner.save(record)
    }
    fn remove(&mut self) -> io::Result<()> {
        self.inner.remove()
    }
}

/// Runs a command that crashes between the log's write and the state's, then reopens the
/// unit with `reopen`: the uncommitted record is gone, the counter did not move, and the
/// next command is recorded and chains.
fn crash_between_log_and_state(
    fleet: &Fleet,
    dir: &Path,
    store: Box<dyn StateStore>,
    reopen: &dyn Fn() -> Unit,
) {
    let armed = Arc::new(AtomicBool::new(false));
    let mut unit = Unit::open_with_store(
        dir,
        Box::new(CrashingStore {
            inner: store,
            armed: armed.clone(),
        }),
    )
    .unwrap();
    let a = admins(1);
    init(&mut unit, &fleet.ca, &a, 1, 1);
    let before = unit.status();
    let signed =
        support::signed_command(unit.id(), before.counter + 1, &Command::ClearNew, &[&a[0]]);
    let der = tke_proto::der::Encode::to_der(&Request::Command(signed)).unwrap();
    armed.store(true, Ordering::SeqCst);
    let crashed = catch_unwind(AssertUnwindSafe(|| unit.handle(&der)));
    assert!(crashed.is_err());
    assert_eq!(
        lines(dir).len(),
        3,
        "the record was written before the crash"
    );
    drop(unit);

    let mut unit = reopen();
    assert_eq!(unit.status(), before, "the state did not move");
    assert_eq!(lines(dir).len(), 2, "the uncommitted record is gone");
    assert_eq!(verified(&mut unit, &fleet.ca, 0).len(), 2);
    ok(run(&mut unit, &fleet.ca, &Command::ClearNew, &[&a[0]]));
    let records = verified(&mut unit, &fleet.ca, 0);
    assert_eq!(records.len(), 3);
    assert_eq!(records[2].command, CommandId::ClearNew);
}

#[test]
fn a_crash_between_log_and_state_loses_neither_with_the_file_store() {
    let fleet = Fleet::new("audit crash");
    let root = tempfile::tempdir().unwrap();
    let (dir, unit) = new_unit(&fleet, root.path());
    drop(unit);
    crash_between_log_and_state(&fleet, &dir, Box::new(FileStore::new(&dir)), &|| {
        Unit::open(&dir).unwrap()
    });
}

#[test]
fn a_crash_between_log_and_state_loses_neither_with_the_journal() {
    let fleet = Fleet::new("audit crash journal");
    let root = tempfile::tempdir().unwrap();
    let (dir, unit) = new_unit(&fleet, root.path());
    let id = unit.id();
    drop(unit);
    let journal = Journal::open(root.path(), JournalOptions::default()).unwrap();
    crash_between_log_and_state(&fleet, &dir, Box::new(journal.store(id)), &|| {
        Unit::open_with_store(&dir, Box::new(journal.store(id))).unwrap()
    });
}

#[test]
fn a_failed_state_save_takes_the_record_back() {
    let f = support::MemoryFactory::soft();
    let fleet = Fleet::new("audit save");
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("u");
    let mut unit =
        support::UnitFactory::create(&f, &dir, UnitId::random(), UnitType::Operational, &fleet);
    let a = admins(1);
    init(&mut unit, &fleet.ca, &a, 1, 1);
    f.fail_saves(&dir, true);
    fails(
        &run(&mut unit, &fleet.ca, &Command::ClearNew, &[&a[0]]),
        ModuleError::INTERNAL,
    );
    f.fail_saves(&dir, false);
    assert_eq!(verified(&mut unit, &fleet.ca, 0).len(), 2);
    ok(run(&mut unit, &fleet.ca, &Command::ClearNew, &[&a[0]]));
    assert_eq!(verified(&mut unit, &fleet.ca, 0).len(), 3);
}

#[test]
fn an_audit_query_for_another_unit_is_refused() {
    let fleet = Fleet::new("audit other");
    let root = tempfile::tempdir().unwrap();
    let mut unit = new_unit(&fleet, root.path()).1;
    let body = send(
        &mut unit,
        &fleet.ca,
        &Request::Audit(AuditQuery::new(UnitId::random(), 0)),
    );
    fails(&body, ModuleError::INVALID_UNIT);
}

#[test]
fn a_unit_written_before_units_kept_a_log_starts_its_log_with_its_next_command() {
    let fleet = Fleet::new("audit upgrade");
    let root = tempfile::tempdir().unwrap();
    let (dir, mut unit) = new_unit(&fleet, root.path());
    let a = admins(1);
    init(&mut unit, &fleet.ca, &a, 1, 1);
    drop(unit);
    // As such a unit's files were: no log, no `audit` in its state.
    edit_state(&dir, |state| {
        state.as_object_mut().unwrap().remove("audit").unwrap();
    });
    fs::remove_file(dir.join(AUDIT_FILE)).unwrap();

    let mut unit = Unit::open(&dir).unwrap();
    assert_eq!(unit.status().counter, 2);
    let log = fetch(&mut unit, &fleet.ca, 0);
    assert_eq!((log.first, log.records.len()), (3, 0));
    assert!(verify_chain(&log).unwrap().is_empty());
    ok(run(&mut unit, &fleet.ca, &Command::ClearNew, &[&a[0]]));
    let records = verified(&mut unit, &fleet.ca, 0);
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0].counter, records[0].prev),
        (3, tke_proto::Digest32([0; 32]))
    );
}

/// Appends `n` chained records after the last one of the unit in `dir` (closed), as the
/// unit would have written them, and moves its state to the last: a long history without
/// running as many signed commands.
fn grow_history(dir: &Path, n: u64, signer: &MemSigner) {
    let mut log = lines(dir);
    let last = AuditRecord::decode_checked(&hex::decode(log.last().unwrap()).unwrap()).unwrap();
    let mut prev = tke_proto::Digest32::sha256(&hex::decode(log.last().unwrap()).unwrap());
    for counter in last.counter + 1..=last.counter + n {
        let der = tke_proto::der::Encode::to_der(&AuditRecord {
            counter,
            command: CommandId::ClearNew,
            command_hash: tke_proto::Digest32::sha256(&counter.to_be_bytes()),
            signers: skis(&[signer]),
            return_code: 0,
            reason_code: 0,
            time: 1_800_000_000 + counter,
            prev,
        })
        .unwrap();
        prev = tke_proto::Digest32::sha256(&der);
        log.push(hex::encode(der));
    }
    write_lines(dir, &log);
    edit_state(dir, |state| {
        state["counter"] = (last.counter + n).into();
        state["audit"]["head"] = prev.to_hex().into();
    });
}

/// Rewrites the `unit.json` of the unit in `dir` (closed) as `f` edits it.
fn edit_state(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join(tke_unit::STATE_FILE);
    let mut state: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    f(&mut state);
    fs::write(&path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
}

/// One page from `from`, as the unit answers it.
fn page(unit: &mut Unit, ca: &CaCertificate, from: u64) -> AuditPage {
    let body = send(unit, ca, &Request::Audit(AuditQuery::new(unit.id(), from)));
    assert_eq!(body.error(), None);
    AuditPage::decode_checked(body.output.as_bytes()).unwrap()
}

#[test]
fn a_unit_with_ten_thousand_records_serves_pages_from_the_middle_and_the_end() {
    let fleet = Fleet::new("audit long");
    let root = tempfile::tempdir().unwrap();
    let (dir, mut unit) = new_unit(&fleet, root.path());
    let a = admins(1);
    init(&mut unit, &fleet.ca, &a, 1, 1);
    drop(unit);
    grow_history(&dir, 10_000, &a[0]);
    let all: Vec<Vec<u8>> = lines(&dir)
        .iter()
        .map(|l| hex::decode(l).unwrap())
        .collect();
    assert_eq!(all.len(), 10_002);

    let mut unit = Unit::open(&dir).unwrap();
    assert_eq!(unit.status().counter, 10_002);
    // Counters start at 1: record `c` is `all[c - 1]`.
    for from in [1, 64, 65, 5_000, 5_057, 9_939, 9_990, 10_002] {
        let p = page(&mut unit, &fleet.ca, from);
        let start = usize::try_from(from).unwrap() - 1;
        let end = (start + MAX_AUDIT_PAGE).min(all.len());
        let got: Vec<&[u8]> = p.records.iter().map(|r| r.as_bytes()).collect();
        let want: Vec<&[u8]> = all[start..end].iter().map(Vec::as_slice).collect();
        assert_eq!(got, want, "page from {from}");
        let prev = match start {
            0 => tke_proto::Digest32([0; 32]),
            i => tke_proto::Digest32::sha256(&all[i - 1]),
        };
        assert_eq!(p.prev, prev, "page from {from}");
    }
    // Past the end: no record, the last one's hash.
    let p = page(&mut unit, &fleet.ca, 10_003);
    assert!(p.records.is_empty());
    assert_eq!(p.prev, tke_proto::Digest32::sha256(&all[10_001]));
    // The tail checks against the head the unit signs, and a new command chains on.
    assert_eq!(verified(&mut unit, &fleet.ca, 9_990).len(), 13);
    ok(run(&mut unit, &fleet.ca, &Command::ClearNew, &[&a[0]]));
    let tail = verified(&mut unit, &fleet.ca, 10_000);
    assert_eq!(tail.len(), 4);
    assert_eq!(tail[3].counter, 10_003);
    drop(unit);

    // Tampering in the middle of a long log is found as before.
    let good = lines(&dir);
    let mut edited = good.clone();
    let mut r = AuditRecord::decode_checked(&hex::decode(&edited[6_999]).unwrap()).unwrap();
    r.return_code = 1;
    edited[6_999] = hex::encode(tke_proto::der::Encode::to_der(&r).unwrap());
    write_lines(&dir, &edited);
    let mut unit = Unit::open(&dir).unwrap();
    assert_eq!(
        verify_chain(&fetch(&mut unit, &fleet.ca, 6_990)),
        Err(AuditTamper::Edited { counter: 7_001 })
    );
    edited.remove(8_000);
    write_lines(&dir, &edited);
    let mut unit = Unit::open(&dir).unwrap();
    assert_eq!(
        verify_chain(&fetch(&mut unit, &fleet.ca, 7_990)),
        Err(AuditTamper::Gap {
            expected: 8_001,
            found: 8_002
        })
    );
}

#[test]
fn with_the_journal_a_log_tail_lost_in_a_crash_is_restored_from_the_journal() {
    let fleet = Fleet::new("audit journal tail");
    let root = tempfile::tempdir().unwrap();
    let (dir, unit) = new_unit(&fleet, root.path());
    let id = unit.id();
    drop(unit);
    let no_compaction = JournalOptions {
        compact_after: usize::MAX,
    };
    let journal = Journal::open(root.path(), no_compaction).unwrap();
    let mut unit = Unit::open_with_store(&dir, Box::new(journal.store(id))).unwrap();
    let a = admins(1);
    init(&mut unit, &fleet.ca, &a, 1, 1);
    for _ in 0..3 {
        ok(run(&mut unit, &fleet.ca, &Command::ClearNew, &[&a[0]]));
    }
    // The journal's writer wrote each line: the unit serves them at once.
    let before = verified(&mut unit, &fleet.ca, 0);
    assert_eq!(before.len(), 5);
    let stats = journal.stats();
    assert_eq!(
        (stats.records, stats.flushes),
        (5, 5),
        "one flush per command for state and record together (one unit, one at a time)"
    );
    // A crash: nothing compacts, and the log's unsynced tail did not reach the disk (cut
    // in the middle of its third line).
    drop(unit);
    drop(journal);
    let full = fs::read(dir.join(AUDIT_FILE)).unwrap();
    let third = full
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(1)
        .unwrap()
        .0
        + 10;
    fs::write(dir.join(AUDIT_FILE), &full[..third]).unwrap();

    let journal = Journal::open(root.path(), no_compaction).unwrap();
    assert_eq!(journal.replay().records, 5);
    assert_eq!(fs::read(dir.join(AUDIT_FILE)).unwrap(), full, "restored");
    let mut unit = Unit::open_with_store(&dir, Box::new(journal.store(id))).unwrap();
    assert_eq!(verified(&mut unit, &fleet.ca, 0), before);
    ok(run(&mut unit, &fleet.ca, &Command::ClearNew, &[&a[0]]));
    assert_eq!(verified(&mut unit, &fleet.ca, 0).len(), 6);
    drop(unit);
    // A graceful stop syncs the log and empties the journal: the file store then serves
    // the same log.
    journal.close().unwrap();
    let mut unit = Unit::open(&dir).unwrap();
    assert_eq!(verified(&mut unit, &fleet.ca, 0).len(), 6);
}
